"""Background processes with log files: start, find, and stop them cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A managed process failed to start or exited early; the message names its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ManagedProcess:
    """A child process in its own session, writing stdout and stderr to ``log_path``."""

    name: str
    pid: int
    log_path: Path
    _popen: subprocess.Popen | None = None

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        return cls(name, popen.pid, log_path, popen)

    @classmethod
    def detached(cls, name: str, argv: list[str], *, log_path: Path) -> ManagedProcess:
        """Start ``argv`` as no child of ours: a shell starts it in the background, in a
        session of its own, and exits, so init is its parent from the start. For programs
        that end when their parent does (Envoy with hot restart enabled asks for SIGTERM
        then), started by a command that exits at once (``turnout stack up``,
        ``restart-envoy``). Returns its pid; its output goes to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        script = 'log=$1; shift; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!'
        started = subprocess.run(["sh", "-c", script, "sh", str(log_path), *argv],
                                 capture_output=True, text=True, timeout=10, check=True)
        return cls(name, int(started.stdout.strip()), log_path)

    @property
    def identity(self) -> str | None:
        return process_identity(self.pid)

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_alive(self.pid)

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessError(
                f"{self.name} exited early; log {self.log_path}:\n{tail(self.log_path)}"
            )

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        stop_pid(self.pid, timeout=timeout, popen=self._popen)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self._popen is not None:
            self._popen.wait()


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one reusing its pid: its start time in clock
    ticks since boot (``/proc/<pid>/stat`` field 22). None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def stop_if_ours(pid: int, identity: str | None, *, timeout: float = 10.0) -> bool:
    """Stop ``pid`` and its process group only if it is still the process we started
    (same start time); a pid reused by another process is left alone. True if stopped."""
    if not pid_alive(pid):
        stop_pid(pid, timeout=0)  # killed outright: what is left of its group goes too
        return False
    if identity is not None and process_identity(pid) != identity:
        return False
    stop_pid(pid, timeout=timeout)
    return True


def _signal(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (our children start their own session), else
    the process alone."""
    with contextlib.suppress(ProcessLookupError):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
                return
        except ProcessLookupError:
            return
        os.kill(pid, sig)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours still answers kill(0); reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    # Someone else's zombie (a detached process whose parent, init here, reaps it later)
    # has exited all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def stop_pid(pid: int, *, timeout: float = 10.0, popen: subprocess.Popen | None = None) -> None:
    """SIGTERM to the process (and its group), up to ``timeout`` s, then SIGKILL; then
    SIGKILL to whatever is left of its group (Triton's Python backend stubs outlive a
    SIGTERM to their server and were left running)."""
    try:
        group = pid if os.getpgid(pid) == pid else None
    except ProcessLookupError:
        # Gone already (killed outright): its pid can only be the group id of what it
        # left behind, since Linux does not reuse a pid that still names a group.
        group = pid
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                break
        elif not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        _signal(pid, signal.SIGKILL)
        if popen is not None:
            popen.wait()
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def processes_naming(path: Path) -> list[int]:
    """Every process (but this one) whose command line names ``path``."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def kill_processes_naming(path: Path) -> list[int]:
    """SIGKILL every process whose command line names ``path``: what a start-up
    interrupted between spawning a process and recording it would leave."""
    killed = []
    for pid in processes_naming(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def wait_http(process: ManagedProcess, url: str, *, timeout: float, what: str) -> float:
    """Poll ``url`` until it answers 2xx while ``process`` lives; returns seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if 200 <= response.status < 300:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise ProcessError(f"{what} not ready after {timeout:.0f}s; log {process.log_path}")
