"""Processes the stack starts are recorded as they start, stopped with their process group,
and a recorded pid that now belongs to someone else is never signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from triton_slots.procs import (
    ManagedProcess,
    pid_alive,
    process_identity,
    processes_naming,
    stop_if_ours,
)
from turnout import stack


def _spawn_family(tmp_path: Path) -> tuple[ManagedProcess, int]:
    """A shell leading its own group with a grandchild; returns it and the grandchild."""
    pidfile = tmp_path / "child.pid"
    process = ManagedProcess.spawn(
        "family", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"],
        log_path=tmp_path / "family.log")
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            return process, int(pidfile.read_text())
        time.sleep(0.02)
    raise AssertionError("the child never started")


def test_stop_takes_the_whole_process_group(tmp_path):
    process, child = _spawn_family(tmp_path)
    assert stop_if_ours(process.pid, process.identity)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(child):
        time.sleep(0.02)
    assert not pid_alive(process.pid) and not pid_alive(child)


def test_an_exited_process_is_not_alive_though_its_parent_has_not_reaped_it():
    """A detached process (Envoy's) is reaped by init, later: until then it is a zombie,
    which answers kill(0) yet runs nothing. Here the zombie's parent is a `sleep` that
    never reaps."""
    parent = subprocess.Popen(["sh", "-c", "true & echo $!; exec sleep 5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.3)
        assert Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        assert not pid_alive(child)
        assert pid_alive(parent.pid)  # a running process still is
    finally:
        parent.kill()
        parent.wait()


def test_a_detached_process_outlives_the_command_that_started_it(tmp_path):
    """What Envoy needs (with hot restart it ends when its parent does): started through
    a shell that exits, in a session of its own, its pid is the program's."""
    process = ManagedProcess.detached("sleeper", ["sleep", "30"], log_path=tmp_path / "l.log")
    try:
        time.sleep(0.2)  # setsid execs the program in this pid (it is no group leader)
        assert pid_alive(process.pid)
        assert Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
        assert os.getpgid(process.pid) == process.pid and os.getsid(process.pid) == process.pid
        assert os.getppid() != int(Path(f"/proc/{process.pid}/stat").read_text()
                                   .rsplit(")", 1)[1].split()[1])  # not our child
    finally:
        process.stop()
    assert not pid_alive(process.pid)


def test_a_pid_that_is_no_longer_ours_is_left_alone(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        identity = process_identity(stranger.pid)
        assert identity is not None
        # Recorded with another start time: a reused pid.
        info = stack.StackInfo(directory=str(tmp_path), ingress="", api_url="", token="t",
                               xds_port=0, envoy_admin="",
                               processes={"controlplane": stranger.pid},
                               identities={"controlplane": str(int(identity) + 1)})
        info.save()
        assert stack.down(tmp_path, progress=print) == []
        assert stranger.poll() is None, "a process that is not ours was signalled"
        assert not (tmp_path / "stack.json").exists()
        # With its true identity it is ours and is stopped.
        info.identities["controlplane"] = identity
        info.save()
        assert stack.down(tmp_path) == ["controlplane"]
        stranger.wait(5)  # (its status was reaped by the liveness check)
        assert not pid_alive(stranger.pid)
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()


def test_stack_record_is_private_and_names_each_process(tmp_path):
    info = stack.StackInfo(directory=str(tmp_path), ingress="", api_url="", token="secret",
                           xds_port=0, envoy_admin="", complete=False)
    process, _ = _spawn_family(tmp_path)
    try:
        info.record(process)
        path = tmp_path / "stack.json"
        assert path.stat().st_mode & 0o777 == 0o600
        saved = json.loads(path.read_text())
        assert saved["processes"] == {"family": process.pid}
        assert saved["identities"] == {"family": process_identity(process.pid)}
        assert saved["complete"] is False
    finally:
        process.stop()


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stack_up_interrupted_half_way_stops_what_it_started(tmp_path, sig):
    directory = tmp_path / "stack"
    # As from a terminal: SIGINT's default action (a shell's background job, such as a CI
    # step run with `&`, would otherwise pass SIGINT on ignored).
    up = subprocess.Popen([sys.executable, "-m", "turnout.cli", "stack", "up", "--dir",
                           str(directory)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    recorded: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not recorded:
            try:
                record = json.loads((directory / "stack.json").read_text())
                recorded = record["processes"]
            except (OSError, ValueError):
                time.sleep(0.05)
        assert recorded and record["complete"] is False, "no process recorded while starting"
        os.kill(up.pid, sig)
        out = up.communicate(timeout=60)[0].decode()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode != 0, out
    for name, pid in recorded.items():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        assert not pid_alive(pid), f"{name} (pid {pid}) survived the interrupted stack up"
    assert not (directory / "stack.json").exists()
    time.sleep(0.5)
    left = processes_naming(directory)
    assert not left, f"processes naming {directory} survived: {left}"

