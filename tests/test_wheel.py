"""Installable anywhere: the wheel built from this checkout, installed into a fresh virtual
environment (its dependencies found beside it, not the checkout), starts a stack from an
unrelated directory: everything the package reads at run time is package data."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_starts_a_stack_from_any_directory(tmp_path):
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                  "--no-build-isolation", "-q", "-w", str(dist)], cwd=tmp_path,
                 env=dict(os.environ), timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("turnout-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("turnout/assets/envoy/bootstrap.yaml", "turnout/assets/prometheus/rules.yml",
                   "turnout/assets/models/classifier/v1/1/weights.npz",
                   "turnout/assets/examples/rollout-v2.yaml", "turnout/openapi.json",
                   "turnout/policy/rollout.schema.json", "turnout/dashboard/app.js"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "examples/", "envoy/", "docs/")) for n in names)
    # A fresh environment: the wheel, and the dependencies of this one beside it (a .pth
    # adds their directory; the checkout's own editable install is not activated by it).
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path,
                env=dict(os.environ)).returncode == 0
    installed = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                      "install", "-q", "--no-deps", "--no-index", str(wheel)],
                     cwd=tmp_path, env=dict(os.environ))
    assert installed.returncode == 0, installed.stderr
    site = Path(_run([str(venv / "bin" / "python"), "-c",
                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=dict(os.environ)).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{Path(sys.executable).parent}:"
                                 f"{os.environ.get('PATH', '')}"}
    env.pop("TURNOUT_DIR", None)
    where = _run([str(venv / "bin" / "python"), "-c", "import turnout; print(turnout.__file__)"],
                 cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(site)), where
    turnout = str(venv / "bin" / "turnout")
    assert _run([turnout, "--help"], cwd=elsewhere, env=env).returncode == 0
    server = _run([str(venv / "bin" / "turnout-controlplane"), "--help"], cwd=elsewhere,
                  env=env)  # the server's own console script, no `python -m`
    assert server.returncode == 0 and "Turnout control plane" in server.stdout, server
    up = _run([turnout, "stack", "up", "--dir", "stack"], cwd=elsewhere, env=env, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "models classifier" in up.stdout
        status = _run([turnout, "status", "--dir", "stack"], cwd=elsewhere, env=env)
        assert status.returncode == 0 and "blue 100%" in status.stdout, status.stdout
    finally:
        down = _run([turnout, "stack", "down", "--dir", "stack"], cwd=elsewhere, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
