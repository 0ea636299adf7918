"""Per-slot keys for Triton's repository API (docker-compose.yml's hardening, on real
Triton): each slot's servers restrict load/unload to their own key; the control plane sends
each slot's key (from a file, as compose delivers secrets, or a variable); a candidate that
reads its own server's key (it is on tritonserver's command line) can load nothing into the
other slot."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.zoo import write_model
from triton_slots.admin import (
    ADMIN_KEY_HEADER,
    GRPC_ADMIN_KEY_HEADER,
    TritonAdmin,
    TritonAdminError,
)
from triton_slots.deploy import DeployError, bring_up, deploy
from triton_slots.launcher import TritonServer, prepare_backends
from triton_slots.registry import LocalRegistry, Stage

pytestmark = pytest.mark.integration

KEYS = {"blue": "b" * 64, "green": "9" * 64}  # hex, as `openssl rand -hex 32` makes them


def _restricted(key: str) -> list[str]:
    return [f"--http-restricted-api=model-repository:{ADMIN_KEY_HEADER}={key}",
            f"--grpc-restricted-protocol=model-repository:{ADMIN_KEY_HEADER}={key}"]


@pytest.fixture(scope="module")
def slots(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    backends = prepare_backends(root / "backends")
    started: dict[str, TritonServer] = {}
    try:
        for slot, key in KEYS.items():
            empty = root / slot / "models"
            empty.mkdir(parents=True)
            started[slot] = TritonServer.start(name=f"triton-{slot}", model_repository=empty,
                                               backends=backends, extra_args=_restricted(key),
                                               log_path=root / f"triton-{slot}.log")
        for server in started.values():
            server.wait_ready()
        yield started, root
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def registry(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    for version, variant in (("v1", "good"), ("v2", "wrong")):
        registry.push(write_model(tmp_path / version, "pair", variant=variant),
                      name="pair", version=version)
    return registry


def _keys_from_files(monkeypatch, root) -> None:
    for slot, key in KEYS.items():
        secret = root / f"triton-admin-key-{slot}"
        secret.write_text(key + "\n")  # a trailing newline, as `openssl ... > file` leaves
        monkeypatch.setenv(f"TURNOUT_TRITON_ADMIN_KEY_{slot.upper()}_FILE", str(secret))
    monkeypatch.delenv("TURNOUT_TRITON_ADMIN_KEY", raising=False)


def test_each_slot_is_managed_with_its_own_key(slots, registry, monkeypatch):
    servers, root = slots
    _keys_from_files(monkeypatch, root)
    result = deploy(registry, "pair", "v1", slot="green", endpoints=[servers["green"].endpoint],
                    repository=None)
    assert result.slot == "green"
    registry.set_stage("pair", "v1", Stage.ACTIVE, slot="green", reason="test")
    assert bring_up(registry, "blue", servers["blue"].endpoint, repository=None) == ["pair:v1"]
    assert TritonAdmin(servers["blue"].endpoint).model_ready("pair")


def test_the_other_slots_key_opens_nothing(slots, registry, monkeypatch):
    """What a malicious candidate on green can do with green's key against blue: nothing,
    over HTTP or gRPC, with or without files in the load request."""
    servers, _root = slots
    blue = servers["blue"].endpoint
    request = urllib.request.Request(f"{blue.http_url}/v2/repository/models/evil/load",
                                     data=b"{}", method="POST",
                                     headers={ADMIN_KEY_HEADER: KEYS["green"]})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    client = triton_grpc.InferenceServerClient(blue.grpc_address)
    try:
        with pytest.raises(InferenceServerException) as grpc_refused:
            client.load_model("evil", config='{"backend": "python"}',
                              files={"file:1/model.py": b"import os"},
                              headers={GRPC_ADMIN_KEY_HEADER: KEYS["green"]})
        assert "restricted" in grpc_refused.value.message().lower() or \
            "permission" in str(grpc_refused.value.status()).lower(), grpc_refused.value
    finally:
        client.close()
    # Deploying with green's key configured for blue fails, naming the server.
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_BLUE", KEYS["green"])
    with pytest.raises(DeployError) as failed:
        deploy(registry, "pair", "v2", slot="blue", endpoints=[blue], repository=None)
    assert blue.http_url in str(failed.value)
    assert "the repository-API key sent for slot blue is missing or not this server's: " \
           "TURNOUT_TRITON_ADMIN_KEY_BLUE or TURNOUT_TRITON_ADMIN_KEY_BLUE_FILE)" \
           in str(failed.value)
    assert registry.get("pair", "v2").stage == Stage.FAILED


def test_an_unreadable_key_file_is_named(slots, registry, monkeypatch, tmp_path):
    servers, _root = slots
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_GREEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(TritonAdminError) as failed:
        TritonAdmin(servers["green"].endpoint, slot="green").load("pair")
    assert f"TURNOUT_TRITON_ADMIN_KEY_GREEN_FILE={tmp_path / 'missing'}: cannot read the key" \
        in str(failed.value)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("TURNOUT_TRITON_ADMIN_KEY_GREEN_FILE", str(tmp_path / "empty"))
    with pytest.raises(TritonAdminError, match="the file is empty"):
        TritonAdmin(servers["green"].endpoint, slot="green").load("pair")
