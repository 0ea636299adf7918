"""Deploy with nothing shared on disk: real Triton servers started on EMPTY repositories
(explicit model control) get each version through the repository API alone (config and
files in the load request); the digest is read back from every server as before."""

from __future__ import annotations

import os
import threading
import time

import pytest
import tritonclient.grpc as triton_grpc

from tests.zoo import write_model
from triton_slots.admin import TritonAdmin
from triton_slots.delivery import DIGEST_PARAMETER
from triton_slots.delivery.repository_api import payload
from triton_slots.deploy import DeployError, deploy
from triton_slots.launcher import TritonServer, prepare_backends
from triton_slots.registry import LocalRegistry, Stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    backends = prepare_backends(root / "backends")
    started: list[TritonServer] = []
    try:
        for i in range(3):
            empty = root / f"host-{i}" / "models"
            empty.mkdir(parents=True)
            started.append(TritonServer.start(name=f"remote-{i}", model_repository=empty,
                                              backends=backends,
                                              log_path=root / f"triton-{i}.log"))
        for server in started:
            server.wait_ready()
        yield started, root
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def registry(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    for kind, version in (("pair", "v1"), ("pair", "v2"), ("text", "v1")):
        registry.push(write_model(tmp_path / kind / version, kind,
                                  variant="good" if version == "v1" else "wrong"),
                      name=kind, version=version)
    return registry


def _digest(server: TritonServer, model: str) -> str:
    config = TritonAdmin(server.endpoint).model_config(model)
    return config["parameters"][DIGEST_PARAMETER]["string_value"]


def test_a_model_set_reaches_servers_with_empty_repositories(servers, registry):
    started, root = servers
    two = started[:2]
    registry.set_stage("text", "v1", Stage.ACTIVE, slot="blue")  # a companion of the set
    lines: list[str] = []
    result = deploy(registry, "pair", "v2", slot="green", endpoints=[s.endpoint for s in two],
                    repository=None, progress=lines.append)
    assert result.companions == ("text:v1",)
    for server in two:
        assert _digest(server, "pair") == registry.get("pair", "v2").digest
        assert _digest(server, "text") == registry.get("text", "v1").digest
    # Nothing was written to any server's repository: the files came in the requests.
    assert [p for p in root.glob("host-*/models/**/*")] == []
    assert any("over the repository API" in line for line in lines), lines
    # It serves (the Python code came over the wire too).
    client = triton_grpc.InferenceServerClient(two[0].endpoint.grpc_address)
    try:
        assert client.is_model_ready("pair")
        metadata = client.get_model_metadata("pair")
        assert [i.name for i in metadata.inputs]
    finally:
        client.close()
    # A new version replaces the old one the same way.
    deploy(registry, "pair", "v1", slot="green", endpoints=[s.endpoint for s in two],
           repository=None)
    assert _digest(two[1], "pair") == registry.get("pair", "v1").digest


def test_an_artifact_over_the_limit_is_refused_before_any_server_is_touched(
        servers, registry, tmp_path, monkeypatch):
    from triton_slots.delivery import repository_api

    started, _ = servers
    big = write_model(tmp_path / "big", "pair", name="big")
    (big / "1" / "weights.bin").write_bytes(os.urandom(3 << 20))
    registry.push(big, name="big", version="v1")
    monkeypatch.setattr(repository_api, "MAX_ARTIFACT_BYTES", 2 << 20)
    with pytest.raises(DeployError, match=r"^big:v1 is 3\.0 MiB; the repository API carries "
                                          r"at most 2 MiB per model"):
        deploy(registry, "big", "v1", slot="green", endpoints=[started[0].endpoint],
               repository=None)
    assert not TritonAdmin(started[0].endpoint).model_ready("big")
    record = registry.get("big", "v1")
    assert record.stage == Stage.FAILED and "at most 2 MiB" in record.stage_reason


def test_the_payload_carries_every_version_file_and_the_stamped_config(registry):
    import json

    record = registry.get("pair", "v2")
    config, files = payload(record)
    assert sorted(files) == ["file:1/model.py"]
    assert files["file:1/model.py"] == (record.path / "1" / "model.py").read_bytes()
    parsed = json.loads(config)
    assert parsed["name"] == "pair"
    assert parsed["parameters"][DIGEST_PARAMETER]["string_value"] == record.digest


def test_a_server_dying_mid_deploy_fails_the_deploy_naming_it(servers, registry, tmp_path):
    """Three servers; the third is killed while the new version loads (it takes a second to
    initialise): the deploy ends failed, naming that server, and the version is marked."""
    started, _ = servers
    slow = write_model(tmp_path / "slow", "pair", name="slowpair", delay_ms=25)
    model_py = slow / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace(
        "def initialize(self, args):", "def initialize(self, args):\n        import time\n"
        "        time.sleep(1.5)", 1))
    registry.push(slow, name="slowpair", version="v1")
    victim = started[2]
    killer = threading.Timer(0.5, victim.stop)
    killer.start()
    began = time.monotonic()
    try:
        with pytest.raises(DeployError) as failed:
            deploy(registry, "slowpair", "v1", slot="green",
                   endpoints=[s.endpoint for s in started], repository=None, timeout=30)
    finally:
        killer.join()
    assert f"failed on 1/3 servers: {victim.endpoint.http_url}" in str(failed.value)
    assert time.monotonic() - began < 30
    assert registry.get("slowpair", "v1").stage == Stage.FAILED
    for server in started[:2]:  # the survivors did load it
        assert TritonAdmin(server.endpoint).model_ready("slowpair")
