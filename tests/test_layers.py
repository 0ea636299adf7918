"""The layers (pyproject.toml's [tool.importlinter] contracts): xds_server and
triton_slots import no other package of ours, gates only triton_slots. Checked on the tree
with import-linter, and shown able to fail on a tree that breaks each contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=path,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_layer_contract():
    result = _lint(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_lower_package_importing_an_upper_one_breaks_its_contract(tmp_path):
    """The same contracts over a small tree where each lower package imports upward."""
    for package, body in (("xds_server", "import turnout\n"),
                          ("triton_slots", "import gates\n"),
                          ("gates", "import xds_server\n"),
                          ("turnout", "")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(body)
    config = ROOT / "pyproject.toml"
    (tmp_path / "pyproject.toml").write_text(config.read_text())
    result = _lint(tmp_path / "pyproject.toml", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept, 3 broken." in result.stdout


def test_a_module_of_xds_server_loads_no_grpc_server():
    """``xds_server``'s package exports load on first use: ``turnout/config.py`` reads
    ``pki`` and ``transport`` without loading the ADS server (issue 24); ``pki`` and
    ``type_urls`` need no gRPC at all."""
    code = ("import sys\n"
            "loaded = lambda: sorted(m for m in ('grpc', 'xds_server.server', "
            "'xds_server.cache') if m in sys.modules)\n"
            "import xds_server.pki, xds_server.type_urls\nprint(loaded())\n"
            "import xds_server.transport\nprint(loaded())\n"
            "from xds_server import SnapshotCache, AdsServer\n"
            "print(SnapshotCache.__module__, AdsServer.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "['grpc']",
                                          "xds_server.cache xds_server.server"]
