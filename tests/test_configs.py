"""Shipped configuration files are valid for the real tools that read them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from turnout.config import ControlPlaneConfig
from turnout.proxy import envoy_binary, render_bootstrap

ROOT = Path(__file__).resolve().parent.parent


def _envoy_validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_rendered_bootstrap_is_valid_for_envoy(tmp_path):
    config = tmp_path / "bootstrap.yaml"
    config.write_text(render_bootstrap(node_id="n", node_cluster="turnout", admin_port=9901,
                                       xds_host="127.0.0.1", xds_port=18000))
    result = _envoy_validate(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_are_valid():
    result = _envoy_validate(ROOT / "examples" / "compose" / "envoy.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = ControlPlaneConfig.load(ROOT / "examples" / "compose" / "controlplane.json")
    assert set(config.slots) == {"blue", "green"} and config.prometheus_url
    assert all(slot.repository and slot.endpoints for slot in config.slots.values())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # Validation traffic from the control-plane container must reach the Envoy service at
    # the port its listener binds, never 127.0.0.1 inside the control-plane container.
    host, port = config.ingress_address.rsplit(":", 1)
    assert host in compose["services"], f"{host} is not a compose service"
    assert int(port) == config.ingress_port
    assert any(str(p).endswith(f":{port}") for p in compose["services"][host]["ports"])
    for slot in config.slots.values():
        for endpoint in slot.endpoints:
            assert endpoint.host in compose["services"], endpoint.host
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./examples"):
                assert (ROOT / source).exists(), source
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make prometheus` installs it with prometheus")
    check = subprocess.run([promtool, "check", "config",
                            str(ROOT / "examples" / "compose" / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
