"""examples/kubernetes/ never ran on a cluster (no API server here): this keeps it
consistent with the code that would read it. The control plane's configuration loads; its
slots are found through the headless Services of the Triton Deployments, on their ports;
every secret the configuration names is delivered; the Envoy bootstrap passes Envoy's own
validation; the Triton image is compose's."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.test_configs import ROOT
from turnout.config import ControlPlaneConfig
from turnout.proxy import envoy_binary
from xds_server.pki import LocalCA

K8S = ROOT / "examples" / "kubernetes"


def _docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str, name: str) -> dict:
    [found] = [d for d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _container(deployment: dict) -> dict:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture
def config(monkeypatch) -> ControlPlaneConfig:
    monkeypatch.setenv("TURNOUT_ADMIN_TOKEN", "a" * 40)
    monkeypatch.setenv("TURNOUT_PREVIEW_KEY", "b" * 40)
    text = _one("ConfigMap", "turnout-controlplane")["data"]["controlplane.json"]
    return ControlPlaneConfig.from_dict(json.loads(text))


def test_every_object_lives_in_the_turnout_namespace():
    assert {d["metadata"]["namespace"] for d in _docs()} == {"turnout"}


@pytest.mark.parametrize("slot", ["blue", "green"])
def test_each_slot_is_found_through_its_headless_service(config, slot):
    dns = config.slots[slot].dns
    service = _one("Service", f"triton-{slot}")
    assert service["spec"]["clusterIP"] == "None"
    assert dns.name == f"triton-{slot}.turnout.svc.cluster.local"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert (dns.grpc_port, dns.http_port, dns.metrics_port) == (
        ports["grpc"], ports["http"], ports["metrics"])
    deployment = _one("Deployment", f"triton-{slot}")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    container = _container(deployment)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == ports
    # Explicit model control on an empty repository: Turnout sends every model.
    assert "--model-control-mode=explicit" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--load-model")]
    assert config.slots[slot].repository is None
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert container["image"] == compose["x-triton"]["image"]


def test_the_control_plane_gets_what_its_configuration_names(config):
    deployment = _one("Deployment", "turnout-controlplane")
    container = _container(deployment)
    env = {e["name"] for e in container["env"]}
    assert {config.token_env, config.preview_key_env, "PGPASSWORD"} <= env
    args = container["args"]
    assert args[:3] == ["turnout.controlplane", "--config", "/etc/turnout/controlplane.json"]
    store = args[args.index("--store") + 1]
    assert store.startswith("postgresql://turnout@turnout-postgres.turnout.svc")
    assert ":" not in store.split("//", 1)[1].split("@")[0], "a password in the store URL"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/etc/turnout/controlplane.json" in mounts
    assert config.tls is not None
    for path in (config.tls.cert, config.tls.key, config.tls.ca):
        assert str(path).startswith("/etc/turnout/tls/")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["xds"], ports["api"]) == (config.xds_port, config.api_port)
    service = _one("Service", "turnout-controlplane")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    ingress = _one("Service", "turnout-ingress")
    assert config.ingress_client == \
        f"turnout-ingress.turnout.svc.cluster.local:{ingress['spec']['ports'][0]['port']}"
    assert config.ingress_port == ingress["spec"]["ports"][0]["port"]


def test_the_envoy_bootstrap_passes_envoys_validation(tmp_path):
    """The ConfigMap's bootstrap, its certificate paths pointed at real files."""
    text = _one("ConfigMap", "turnout-envoy")["data"]["envoy.yaml"]
    ca = LocalCA.create(tmp_path)
    client = ca.issue_client("client", ("envoy-*",))
    for name, path in (("client.pem", client.cert), ("client.key", client.key),
                       ("ca.pem", ca.cert)):
        text = text.replace(f"/etc/envoy/tls/{name}", str(path))
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(text)
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap),
                             "--service-node", "envoy-x"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    container = _container(_one("Deployment", "turnout-envoy"))
    assert container["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]
    assert "envoy-$(POD_NAME)" in container["args"]


def test_the_readme_says_it_never_ran():
    text = (K8S / "README.md").read_text()
    assert "nothing here was ever" in text and "applied to a cluster" in text
    for secret in {v["secretKeyRef"]["name"] for d in _docs()
                   if d["kind"] in ("Deployment", "StatefulSet")
                   for c in d["spec"]["template"]["spec"]["containers"]
                   for e in c.get("env", []) for v in [e.get("valueFrom", {})]
                   if "secretKeyRef" in v}:
        assert secret in text
