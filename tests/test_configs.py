"""Shipped configuration files are valid for the real tools that read them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from turnout.config import ControlPlaneConfig
from turnout.errors import ConfigError
from turnout.proxy import envoy_binary, render_bootstrap

ROOT = Path(__file__).resolve().parent.parent


def _envoy_validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value, problem", [
    (None, "TURNOUT_ADMIN_TOKEN is empty or unset"),
    ("", "TURNOUT_ADMIN_TOKEN is empty or unset"),
    ("change-me", "holds an example or short value"),
    ("short-secret", "holds an example or short value"),
])
def test_compose_control_plane_refuses_missing_or_example_tokens(monkeypatch, value, problem):
    monkeypatch.setenv("TURNOUT_PREVIEW_KEY", "b" * 40)
    if value is None:
        monkeypatch.delenv("TURNOUT_ADMIN_TOKEN", raising=False)
    else:
        monkeypatch.setenv("TURNOUT_ADMIN_TOKEN", value)
    with pytest.raises(ConfigError, match=problem):
        ControlPlaneConfig.load(ROOT / "examples" / "compose" / "controlplane.json")


@pytest.mark.parametrize("options", [
    {},
    {"delta": True},
    {"xds_fallbacks": [("127.0.0.1", 18001), ("127.0.0.1", 18002)]},
], ids=["sotw", "delta", "replicas"])
def test_rendered_bootstrap_is_valid_for_envoy(tmp_path, options):
    config = tmp_path / "bootstrap.yaml"
    text = render_bootstrap(node_id="n", node_cluster="turnout", admin_port=9901,
                            xds_host="127.0.0.1", xds_port=18000, **options)
    config.write_text(text)
    result = _envoy_validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("DELTA_GRPC" in text) == bool(options.get("delta"))
    replicas = 1 + len(options.get("xds_fallbacks", []))
    assert text.count("priority:") == replicas
    assert ("tcp_health_check" in text) == (replicas > 1)


COMPOSE_SECRETS = {"TURNOUT_ADMIN_TOKEN": "a" * 40, "TURNOUT_PREVIEW_KEY": "b" * 40}


def _addresses(compose: dict, network: str) -> dict[str, str]:
    """Service -> its static address on ``network``."""
    return {name: nets[network]["ipv4_address"]
            for name, service in compose["services"].items()
            if isinstance(nets := service.get("networks"), dict) and network in nets}


def test_compose_files_are_valid(monkeypatch, tmp_path):
    # Envoy reads its certificate files to validate: the CA step's, where compose mounts
    # them (tests/test_integration_compose_mtls.py runs that handshake for real).
    from turnout.compose_pki import compose_pki
    _, clients = compose_pki(tmp_path / "pki", server_hosts=("controlplane",),
                             nodes={"envoy-0": None})
    bootstrap = (ROOT / "examples" / "compose" / "envoy.yaml").read_text()
    assert bootstrap.count("/etc/envoy/pki/") == 3
    (tmp_path / "envoy.yaml").write_text(bootstrap.replace(
        "/etc/envoy/pki", str(clients["envoy-0"].cert.parent)))
    result = _envoy_validate(tmp_path / "envoy.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, value in COMPOSE_SECRETS.items():
        monkeypatch.setenv(name, value)
    config = ControlPlaneConfig.load(ROOT / "examples" / "compose" / "controlplane.json")
    assert set(config.slots) == {"blue", "green"} and config.prometheus_url
    assert all(slot.repository and slot.endpoints for slot in config.slots.values())
    assert [t.name for t in config.tokens] == ["env:TURNOUT_ADMIN_TOKEN"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    control = _addresses(compose, "control")
    # Validation traffic from the control-plane container must reach Envoy's listener
    # port at an address Envoy has, never 127.0.0.1 inside the control-plane container.
    host, port = config.ingress_address.rsplit(":", 1)
    assert host == control["envoy"]
    # Shadow steps read the tap through Envoy's admin, on its `control` address.
    admin = yaml.safe_load(bootstrap)["admin"]["address"]["socket_address"]
    assert config.shadow_admins == (f"http://{admin['address']}:{admin['port_value']}",)
    assert admin["address"] == control["envoy"]
    assert int(port) == config.ingress_port
    assert any(str(p).endswith(f":{port}") for p in compose["services"]["envoy"]["ports"])
    for slot in config.slots.values():
        for endpoint in slot.endpoints:
            assert endpoint.host in compose["services"], endpoint.host
            assert "control" not in compose["services"][endpoint.host]["networks"]
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./examples"):
                assert (ROOT / source).exists(), source
    # What the models' containers must not reach listens on `control` addresses only.
    assert config.bind_host == control["controlplane"]
    envoy = yaml.safe_load((ROOT / "examples" / "compose" / "envoy.yaml").read_text())
    assert envoy["admin"]["address"]["socket_address"]["address"] == control["envoy"]
    xds = envoy["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    assert xds["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] == \
        control["controlplane"]
    _compose_is_hardened(compose)


def _compose_is_hardened(compose: dict) -> None:
    """Issue 28's compose items, read from the file: a candidate (arbitrary Python in a
    Triton container) reaches no other slot, holds no other slot's key, writes no model."""
    services = compose["services"]
    for slot in ("blue", "green"):
        network = f"models-{slot}"
        assert compose["networks"][network].get("internal") is True
        triton = services[f"triton-{slot}"]
        assert set(triton["networks"]) == {network}  # no other slot, no control network
        on_it = {name for name, s in services.items() if network in s.get("networks", {})}
        assert on_it == {f"triton-{slot}", "controlplane", "envoy", "prometheus"}, on_it
        # Its own key, as a file; the model repository read-only.
        assert triton["secrets"] == [{"source": f"triton_admin_key_{slot}",
                                      "target": "triton_admin_key"}]
        assert compose["secrets"][f"triton_admin_key_{slot}"]["file"] == \
            f"./secrets/triton-admin-key-{slot}"
        assert [v.split(":", 2)[1:] for v in triton["volumes"]] == [["/models", "ro"]]
        env = services["controlplane"]["environment"]
        assert env[f"TURNOUT_TRITON_ADMIN_KEY_{slot.upper()}_FILE"] == \
            f"/run/secrets/triton_admin_key_{slot}"
    assert "models" not in compose["networks"]
    assert set(services["controlplane"]["secrets"]) == {"triton_admin_key_blue",
                                                        "triton_admin_key_green"}
    # Triton's own option syntax (`<api>:<header>=<key>`; a comma makes tritonserver exit),
    # the key read from the secret, never written in the file or an environment variable.
    [command] = compose["x-triton"]["command"]
    assert "key=$$(cat /run/secrets/triton_admin_key)" in command
    assert "--http-restricted-api=model-repository:turnout-admin-key=$$key" in command
    assert "--grpc-restricted-protocol=model-repository:turnout-admin-key=$$key" in command
    text = (ROOT / "docker-compose.yml").read_text()
    assert "TURNOUT_TRITON_ADMIN_KEY:" not in text and "TRITON_ADMIN_KEY}" not in text
    for name in ("TURNOUT_ADMIN_TOKEN", "TURNOUT_PREVIEW_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{name}:?" in text, name  # compose refuses to start without it
    # Least privilege: no capability where none is needed, never new privileges.
    for name, service in services.items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        if name not in ("seed", "controlplane"):  # these two write ./state as its owner
            assert service.get("cap_drop") == ["ALL"], name
    triton = services["triton-blue"]
    assert triton["read_only"] is True and triton["tmpfs"] == ["/tmp"]
    assert "--web.enable-lifecycle" not in str(services["prometheus"].get("command"))
    assert "--web.enable-admin-api" not in str(services["prometheus"].get("command"))


def test_compose_prometheus_and_grafana_files(tmp_path):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make prometheus` installs it with prometheus")
    # The rule file is mounted where compose puts it; check it from where it lies here.
    prometheus = yaml.safe_load((ROOT / "examples" / "compose" / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[1::-1] for v in compose["services"]["prometheus"]["volumes"])
    prometheus["rule_files"] = [str(ROOT / mounts[f].removeprefix("./"))
                                for f in prometheus["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 13 rules found" in check.stdout
    grafana = compose["services"]["grafana"]
    assert set(grafana["networks"]) == {"control"}
    for volume in grafana["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


def _promtool(*args: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make prometheus` installs it with prometheus")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT / "examples" / "prometheus")


def test_alert_and_recording_rules_pass_promtool():
    check = _promtool("check", "rules", "rules.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    tested = _promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_grafana_dashboard_panels_use_metrics_that_exist():
    """Every series a panel reads is exported by the control plane (its telemetry), made by
    a recording rule, or is Envoy's/Triton's."""
    import re

    from turnout.telemetry import Telemetry

    dashboard = json.loads((ROOT / "examples" / "grafana" / "turnout-dashboard.json").read_text())
    exported = {m.name for m in Telemetry().registry.collect()}
    exported |= {f"{n}_total" for n in exported} | {f"{n}_bucket" for n in exported}
    rules = yaml.safe_load((ROOT / "examples" / "prometheus" / "rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b(turnout[:_][a-z0-9_:]+)", target["expr"]))
            assert names, (panel["title"], target["expr"])
            unknown = names - exported - recorded
            assert not unknown, (panel["title"], unknown)
