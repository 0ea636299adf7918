"""The real CLI end to end: `turnout stack up`, `traffic set`, `status`, `stack down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triton_slots.loadgen import send
from triton_slots.procs import pid_alive
from turnout.stack import StackInfo

pytestmark = pytest.mark.integration


def turnout(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "turnout.cli", *args], capture_output=True, text=True,
        timeout=120, check=check,
    )


def test_stack_lifecycle_through_the_cli(tmp_path: Path):
    directory = tmp_path / "stack"
    up = turnout("stack", "up", "--dir", str(directory))
    info = StackInfo.load(directory)
    try:
        assert f"ingress {info.ingress}" in up.stdout
        assert set(info.processes) == {"triton-blue-0", "triton-green-0", "controlplane",
                                       "envoy envoy-0", "prometheus"}
        again = turnout("stack", "up", "--dir", str(directory), check=False)
        assert again.returncode != 0 and "already running" in again.stderr

        moved = turnout("traffic", "set", "--green", "30", "--dir", str(directory))
        assert "1/1 proxies ACKed" in moved.stdout
        status = json.loads(turnout("status", "--json", "--dir", str(directory)).stdout)
        assert status["weights"] == {"blue": 70, "green": 30}
        assert [p["in_sync"] for p in status["xds"]["proxies"]] == [True]
        assert all(e["ready"] for eps in status["slots"].values() for e in eps)
        assert send(info.ingress, 50, model="classifier", concurrency=2).failed == 0

        bad = turnout("traffic", "set", "--green", "130", "--dir", str(directory), check=False)
        assert bad.returncode == 2 and "130" in bad.stderr
        for log in info.logs.values():
            assert os.path.getsize(log) > 0, log
        # Secrets are never world-readable: the admin token, the token digests and the
        # preview key.
        for secret in ("stack.json", "controlplane.json"):
            assert (directory / secret).stat().st_mode & 0o077 == 0, secret
    finally:
        down = turnout("stack", "down", "--dir", str(directory))
    assert "stack stopped (5 processes)" in down.stdout
    assert not any(pid_alive(pid) for pid in info.processes.values())
    missing = turnout("status", "--dir", str(directory), check=False)
    assert missing.returncode == 1 and "no stack" in missing.stderr


def test_stack_up_with_your_own_models(tmp_path: Path):
    from tests.zoo import write_model

    pair, text = write_model(tmp_path / "pair", "pair"), write_model(tmp_path / "text", "text")
    (tmp_path / "empty").mkdir()
    refused = turnout("stack", "up", "--dir", str(tmp_path / "nope"), "--model",
                      str(tmp_path / "empty"), check=False)
    assert refused.returncode == 1 and "config.pbtxt: missing" in refused.stderr
    directory = tmp_path / "stack"
    up = turnout("stack", "up", "--dir", str(directory), "--model", str(pair), "--model",
                 str(text))
    info = StackInfo.load(directory)
    try:
        assert "models pair, text" in up.stdout and info.models == ["pair", "text"]
        for model in ("pair", "text"):
            for slot in ("blue", "green"):
                stats = send(info.ingress, 20, model=model, concurrency=1,
                             headers={"x-turnout-slot": slot,
                                      "x-turnout-preview-key": info.preview_key})
                assert stats.ok == 20, (model, slot, stats.errors)
        models = turnout("models", "list", "--dir", str(directory)).stdout
        assert "pair" in models and "text" in models and "active" in models
    finally:
        turnout("stack", "down", "--dir", str(directory))
