"""Deploy against a fake Triton repository API: a real HTTP server that "loads" what is
staged in the slot's repository (it reads config.pbtxt back, digest included). What is
tested is deploy's logic: staging, the set of models a slot serves, digest proof, and
marking failures; the real Triton is in the integration tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from tests.zoo import write_model
from triton_slots.artifact import parse_config
from triton_slots.delivery import DIGEST_PARAMETER
from triton_slots.delivery.shared import staged_digest
from triton_slots.deploy import DeployError, deploy
from triton_slots.registry import LocalRegistry, Stage
from triton_slots.slot import Endpoint


class FakeTriton:
    """Serves /v2/repository/models/M/load, /v2/models/M/ready and /v2/models/M/config
    from ``repository``. ``fail_load`` names models whose load fails; ``lie`` makes the
    served config carry another digest."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.loaded: dict[str, dict] = {}
        self.loads: list[str] = []
        self.fail_load: set[str] = set()
        self.lie = False
        self.no_digest = False  # the served config carries no digest
        self.ready_after = 0  # readiness polls answered "not ready" after each load
        self.polls = 0
        self.hang = threading.Event()  # set: requests are held until the test ends
        self.version = "2.51.0"  # GET /v2
        self.explicit: bool | None = True  # unload: 200, 503 unless explicit, None: 500
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object = None) -> None:
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fake.hang.is_set():
                    fake.release.wait(30)
                    return None
                parts = self.path.strip("/").split("/")
                model = parts[3]
                if parts[-1] == "unload" and fake.explicit is None:
                    return self._answer(500, {"error": "internal error"})
                if parts[-1] == "unload":
                    return self._answer(200) if fake.explicit else self._answer(
                        503, {"error": "explicit model load / unload is not allowed if "
                                       "polling is enabled"})
                fake.loads.append(model)
                if model in fake.fail_load:
                    return self._answer(400, {"error": f"failed to load '{model}': boom"})
                config = parse_config(fake.repository / model / "config.pbtxt")
                fake.loaded[model] = MessageToDict(config, preserving_proto_field_name=True)
                fake.polls = fake.ready_after
                return self._answer(200)

            def do_GET(self) -> None:
                if self.path == "/v2":
                    return self._answer(200, {"name": "triton"} | (
                        {"version": fake.version} if fake.version else {}))
                parts = self.path.strip("/").split("/")
                model = parts[2]
                if model not in fake.loaded:
                    return self._answer(400, {"error": f"model '{model}' is not loaded"})
                if parts[-1] == "ready":
                    if fake.polls > 0:
                        fake.polls -= 1
                        return self._answer(400, {"error": "loading"})
                    return self._answer(200)
                config = json.loads(json.dumps(fake.loaded[model]))
                if fake.lie:
                    config["parameters"][DIGEST_PARAMETER] = {"string_value": "f" * 64}
                if fake.no_digest:
                    config.pop("parameters")
                return self._answer(200, config)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = Endpoint("127.0.0.1", self.server.server_address[1], 1, 1)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    for kind in ("pair", "text"):
        registry.push(write_model(tmp_path / "v1" / kind, kind), name=kind, version="v1")
        registry.set_stage(kind, "v1", Stage.ACTIVE, slot="blue")
        registry.push(write_model(tmp_path / "v2" / kind, kind, variant="wrong"), name=kind,
                      version="v2")
    repository = tmp_path / "green"
    triton = FakeTriton(repository)
    yield registry, repository, triton
    triton.close()


def test_deploy_brings_the_whole_set_and_proves_the_digest(env):
    registry, repository, triton = env
    lines: list[str] = []
    result = deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
                    repository=repository, progress=lines.append)
    assert result.companions == ("text:v1",) and result.ref == "pair:v2"
    assert staged_digest(repository, "pair") == registry.get("pair", "v2").digest
    assert staged_digest(repository, "text") == registry.get("text", "v1").digest
    assert triton.loads == ["text", "pair"]  # the companions first, then the new version
    record = registry.get("pair", "v2")
    assert (record.stage, record.slot) == (Stage.CANDIDATE, "green")
    assert any("digest verified" in line for line in lines)
    # Deploying again: the companion is already there with its digest (not reloaded).
    triton.loads.clear()
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    assert triton.loads == []


def test_an_idle_slot_still_serving_the_previous_version_gets_the_new_one(env):
    """The normal blue-green state (issue 25: a fake that starts empty never shows it):
    the idle slot still serves v1 of both models, ready. Deploying pair:v2 reloads pair
    (ready is not enough: the digest differs), keeps text:v1 (same digest), and the server
    ends serving v2's digest."""
    from triton_slots.admin import TritonAdmin
    from triton_slots.delivery.shared import stage_artifact

    registry, repository, triton = env
    admin = TritonAdmin(triton.endpoint)
    for kind in ("pair", "text"):
        stage_artifact(registry.get(kind, "v1"), repository)
        admin.load(kind)
    assert admin.model_ready("pair") and triton.loads == ["pair", "text"]
    triton.loads.clear()
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    assert triton.loads == ["pair"]  # the companion already served its digest
    served = admin.model_config("pair")["parameters"][DIGEST_PARAMETER]["string_value"]
    assert served == registry.get("pair", "v2").digest != registry.get("pair", "v1").digest


def test_a_server_serving_another_digest_fails_the_deploy(env):
    registry, repository, triton = env
    triton.lie = True
    with pytest.raises(DeployError, match=r"serves digest ffffffffffff, expected"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository, timeout=5)
    record = registry.get("pair", "v2")
    assert record.stage == Stage.FAILED and "deploy to green failed" in record.stage_reason
    assert record.slot is None


def test_a_load_error_names_the_server_and_marks_the_version_failed(env):
    registry, repository, triton = env
    triton.fail_load = {"pair"}
    with pytest.raises(DeployError, match=r"failed on 1/1 servers: .*failed to load 'pair'"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository, timeout=5)
    assert registry.get("pair", "v2").stage == Stage.FAILED


def test_a_companion_that_cannot_load_fails_the_deploy_before_the_new_version(env):
    registry, repository, triton = env
    triton.fail_load = {"text"}
    with pytest.raises(DeployError, match=r"could not bring text:v1 \(also served by the "
                                          r"active slot\) onto it"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository, timeout=5)
    assert "pair" not in triton.loads
    assert registry.get("pair", "v2").stage == Stage.FAILED


def test_refusals_before_anything_is_touched(env, tmp_path):
    registry, repository, triton = env
    with pytest.raises(DeployError, match="slot green has no Triton servers"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[], repository=repository)
    record = registry.get("pair", "v2")
    (record.path / "1" / "model.py").write_text("# tampered\n")
    with pytest.raises(DeployError, match="corrupted artifact"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository)
    assert registry.get("pair", "v2").stage == Stage.FAILED
    assert triton.loads == [] and not (repository / "pair").exists()


def test_an_unreachable_server_is_named(env):
    registry, repository, _ = env
    dead = Endpoint("127.0.0.1", 1, 1, 1)
    with pytest.raises(DeployError, match=r"http://127\.0\.0\.1:1: unreachable"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[dead],
               repository=repository, timeout=2)


def test_staged_digest_is_empty_for_nothing_staged_garbage_or_no_digest(tmp_path):
    assert staged_digest(tmp_path / "nowhere", "m") == ""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text("this is { not a config")
    assert staged_digest(tmp_path, "m") == ""
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    assert staged_digest(tmp_path, "m") == ""


def test_the_result_and_the_registry_say_what_was_deployed(env):
    registry, repository, triton = env
    lines: list[str] = []
    result = deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
                    repository=repository, progress=lines.append)
    digest = registry.get("pair", "v2").digest
    assert (result.ref, result.slot, result.digest, result.endpoints, result.companions) == \
        ("pair:v2", "green", digest, (triton.endpoint.grpc_address,), ("text:v1",))
    assert 0 <= result.seconds < 30
    assert registry.get("pair", "v2").stage_reason == "deployed to green"
    assert f"staging pair:v2 ({digest[:12]}) into {repository}" in lines
    assert f"  {triton.endpoint.grpc_address}: pair:v2 READY, digest verified" in lines
    # A second deploy restages the new version (always, fresh) but not the companion
    # already staged with its digest; staging leaves nothing behind.
    (repository / "pair" / "1" / "model.py").write_text("# tampered\n")
    lines.clear()
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository, progress=lines.append)
    assert [line for line in lines if line.startswith("staging")] == [
        f"staging pair:v2 ({digest[:12]}) into {repository}"]
    assert (repository / "pair" / "1" / "model.py").read_text() != "# tampered\n"
    assert sorted(p.name for p in repository.iterdir()) == ["pair", "text"]


def test_the_repository_is_created_with_its_parents(env, tmp_path):
    registry, _, triton = env
    repository = tmp_path / "deep" / "er" / "green"
    triton.repository = repository
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    assert staged_digest(repository, "pair") == registry.get("pair", "v2").digest


def test_a_model_that_takes_a_while_to_load_is_waited_for(env):
    registry, repository, triton = env
    triton.ready_after = 3
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository, timeout=10)
    assert registry.get("pair", "v2").stage == Stage.CANDIDATE


def test_a_model_never_ready_fails_at_the_deadline_naming_server_and_model(env):
    registry, repository, triton = env
    triton.ready_after = 10 ** 6
    with pytest.raises(DeployError) as raised:
        deploy(registry, "text", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository, timeout=1)
    # The companion (pair:v1, served by the active slot) is brought first: it fails.
    assert str(raised.value) == (
        "deploy to green failed: could not bring pair:v1 (also served by the active slot) "
        f"onto it: {triton.endpoint.http_url}: 'pair' not READY before timeout")


def test_a_server_that_never_answers_fails_within_the_deploy_timeout(env):
    registry, repository, triton = env
    triton.hang.set()
    started = time.monotonic()
    with pytest.raises(DeployError, match=r"onto it: http://127\.0\.0\.1:\d+: unreachable"):
        deploy(registry, "text", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository, timeout=1)
    # The server would hold the request 30 s: the deploy's own timeout ended it.
    assert time.monotonic() - started < 15


def test_a_served_config_without_a_digest_fails_with_none(env):
    registry, repository, triton = env
    triton.no_digest = True
    lines: list[str] = []
    with pytest.raises(DeployError) as raised:
        deploy(registry, "text", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository, timeout=5, progress=lines.append)
    digest = registry.get("pair", "v1").digest  # the companion, brought first
    failure = f"{triton.endpoint.http_url}: serves digest (none), expected {digest[:12]}"
    assert str(raised.value) == ("deploy to green failed: could not bring pair:v1 (also "
                                 f"served by the active slot) onto it: {failure}")
    assert f"  {triton.endpoint.grpc_address}: FAILED {failure}" in lines


def deploy_on_two_failing(registry, repository, triton, model: str):  # type: ignore[no-untyped-def]
    """Deploy text:v2 onto ``triton`` and a second fake that both fail to load ``model``:
    the error message, and the second fake (closed)."""
    other = FakeTriton(repository)
    try:
        triton.fail_load = other.fail_load = {model}
        with pytest.raises(DeployError) as raised:
            deploy(registry, "text", "v2", slot="green",
                   endpoints=[triton.endpoint, other.endpoint], repository=repository,
                   timeout=5)
    finally:
        other.close()
    return str(raised.value), other


def test_every_failed_server_is_listed(env, tmp_path):
    registry, repository, triton = env
    message, other = deploy_on_two_failing(registry, repository, triton, "text")
    assert message.startswith("deploy to green failed on 2/2 servers: ")
    first, second = message.removeprefix("deploy to green failed on 2/2 servers: ").split("; ")
    assert {first.split(": ")[0], second.split(": ")[0]} == {triton.endpoint.http_url,
                                                             other.endpoint.http_url}
    assert "failed to load 'text'" in first and "failed to load 'text'" in second


def test_every_server_failing_a_companion_is_listed(env):
    registry, repository, triton = env
    message, other = deploy_on_two_failing(registry, repository, triton, "pair")
    prefix = ("deploy to green failed: could not bring pair:v1 (also served by the active "
              "slot) onto it: ")
    assert message.startswith(prefix)
    first, second = message.removeprefix(prefix).split("; ")
    assert {first.split(": ")[0], second.split(": ")[0]} == {triton.endpoint.http_url,
                                                             other.endpoint.http_url}


def test_a_failed_redeploy_clears_the_slot_and_records_why(env):
    registry, repository, triton = env
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    assert registry.get("pair", "v2").slot == "green"
    record = registry.get("pair", "v2")
    (record.path / "1" / "model.py").write_text("# tampered\n")
    with pytest.raises(DeployError, match="corrupted artifact"):
        deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
               repository=repository)
    record = registry.get("pair", "v2")
    assert record.stage == Stage.FAILED and record.slot is None
    assert "corrupted artifact" in record.stage_reason


def test_an_unknown_version_is_a_deploy_error(env):
    registry, repository, triton = env
    with pytest.raises(DeployError, match="v9"):
        deploy(registry, "pair", "v9", slot="green", endpoints=[triton.endpoint],
               repository=repository)


def test_the_version_a_deploy_replaces_on_the_slot_is_retired(env, tmp_path):
    """The registry's stages match what the slots serve (issue 29, finding 2): after a
    deploy onto the slot of a warm standby, the standby is no longer loaded anywhere."""
    registry, repository, triton = env
    registry.push(write_model(tmp_path / "v0" / "pair", "pair"), name="pair", version="v0")
    registry.set_stage("pair", "v0", Stage.STANDBY, slot="green")
    registry.push(write_model(tmp_path / "v9" / "pair", "pair"), name="pair", version="v9")
    registry.set_stage("pair", "v9", Stage.CANDIDATE, slot="blue")  # another slot: kept
    deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    old = registry.get("pair", "v0")
    assert (old.stage, old.slot, old.stage_reason) == \
        (Stage.RETIRED, None, "replaced on green by pair:v2")
    assert (registry.get("pair", "v9").stage, registry.get("pair", "v9").slot) == \
        (Stage.CANDIDATE, "blue")
    assert registry.get("pair", "v1").stage == Stage.ACTIVE
    assert registry.get("text", "v1").stage == Stage.ACTIVE  # a companion, not replaced
    # A candidate replaced by the next candidate is retired too; a redeploy is not.
    registry.push(write_model(tmp_path / "v3" / "pair", "pair"), name="pair", version="v3")
    deploy(registry, "pair", "v3", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    assert registry.get("pair", "v2").stage == Stage.RETIRED
    deploy(registry, "pair", "v3", slot="green", endpoints=[triton.endpoint],
           repository=repository)
    assert registry.get("pair", "v3").stage == Stage.CANDIDATE


def test_an_artifact_over_the_delivery_limit_fails_before_any_server_and_is_marked(
        env, monkeypatch):
    from triton_slots.delivery import repository_api

    registry, _repository, triton = env
    monkeypatch.setattr(repository_api, "MAX_ARTIFACT_BYTES", 10)
    with pytest.raises(DeployError) as failed:
        deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
               repository=None)
    message = str(failed.value)
    # The active set's other model goes first: it is the one refused.
    assert message.startswith("text:v1 is 0.0 MiB; the repository API carries at most 0 MiB "
                              "per model (triton_slots.delivery.repository_api."
                              "MAX_ARTIFACT_BYTES)")
    record = registry.get("pair", "v2")
    assert (record.stage, record.stage_reason) == (Stage.FAILED, message)
    assert triton.loads == [], "a server was touched"


def test_a_server_that_goes_away_while_loading_fails_at_once(env):
    registry, repository, triton = env
    triton.ready_after = 1_000  # never ready while it answers
    real = triton.server

    def vanish() -> None:
        time.sleep(0.3)
        real.shutdown()
        real.server_close()
    killer = threading.Thread(target=vanish)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeployError, match=rf"{triton.endpoint.http_url}: unreachable"):
            deploy(registry, "pair", "v2", slot="green", endpoints=[triton.endpoint],
                   repository=repository, timeout=20)
    finally:
        killer.join()
    assert time.monotonic() - started < 5, "it waited for the deploy's timeout"


def test_bring_up_loads_the_slots_set_onto_one_server_and_changes_no_stage(env):
    from triton_slots.deploy import bring_up

    registry, repository, triton = env
    registry.set_stage("pair", "v2", Stage.CANDIDATE, slot="green")
    lines: list[str] = []
    refs = bring_up(registry, "green", triton.endpoint, repository=repository,
                    progress=lines.append)
    assert refs == ["pair:v2", "text:v1"]
    assert sorted(triton.loads) == ["pair", "text"]
    assert (registry.get("pair", "v2").stage, registry.get("text", "v1").stage) == \
        (Stage.CANDIDATE, Stage.ACTIVE)
    assert any("digest verified" in line for line in lines)
    # A load that fails names the server, the slot and the version.
    triton.loaded.clear()
    triton.fail_load.add("text")
    with pytest.raises(DeployError, match=rf"^bringing 127\.0\.0\.1:1 up to slot green: "
                                          rf"text:v1: {triton.endpoint.http_url}: load 'text' "
                                          "failed"):
        bring_up(registry, "green", triton.endpoint, repository=repository, timeout=5)
    # A registry copy that no longer hashes to its digest is never sent.
    triton.fail_load.clear()
    record = registry.get("pair", "v2")
    (record.path / "1" / "model.py").write_text("# tampered\n")
    triton.loads.clear()
    with pytest.raises(DeployError, match=r"pair:v2: pair:v2: stored files .* refusing to use "
                                          "a corrupted artifact"):
        bring_up(registry, "green", triton.endpoint, repository=repository, timeout=5)
    assert "pair" not in triton.loads


def test_a_server_turnout_cannot_manage_or_unlike_the_fleet_is_never_loaded(tmp_path):
    """Before any model reaches a new server: its model control must be explicit, its
    Triton version that of the first peer that answers (unreachable peers and the server
    itself are skipped)."""
    from triton_slots.admin import TritonAdminError, check_server
    from triton_slots.deploy import bring_up

    new, peer, other = (FakeTriton(tmp_path / n) for n in ("new", "peer", "other"))
    gone = Endpoint("127.0.0.1", 1, 2, 3)  # nothing listens on port 1
    registry = LocalRegistry(tmp_path / "registry")
    registry.push(write_model(tmp_path / "m", "pair"), name="pair", version="v1")
    registry.set_stage("pair", "v1", Stage.ACTIVE, slot="blue")
    try:
        assert check_server(new.endpoint) == "2.51.0"
        assert check_server(new.endpoint, (new.endpoint, gone, peer.endpoint)) == "2.51.0"
        other.version = "2.50.0"
        assert check_server(new.endpoint, (peer.endpoint, other.endpoint)) == "2.51.0", \
            "only the first peer that answers counts"
        with pytest.raises(TritonAdminError, match=rf"^{new.endpoint.http_url}: runs Triton "
                                                   rf"2\.51\.0 but {other.endpoint.grpc_address}"
                                                   r" runs 2\.50\.0: every server of both "
                                                   "slots must run one Triton version$"):
            check_server(new.endpoint, (gone, other.endpoint, peer.endpoint))
        with pytest.raises(DeployError, match=r"^bringing 127\.0\.0\.1:1 up to slot blue: .*"
                                              "runs Triton 2.51.0 but"):
            bring_up(registry, "blue", new.endpoint, repository=None,
                     peers=(other.endpoint,))
        new.explicit = False
        with pytest.raises(DeployError, match=r"explicit model control is off: start "
                                              r"tritonserver with --model-control-mode="
                                              "explicit"):
            bring_up(registry, "blue", new.endpoint, repository=None)
        assert new.loads == [], "a model reached a server that failed its check"
        with pytest.raises(TritonAdminError, match="unreachable"):
            check_server(gone)
    finally:
        for fake in (new, peer, other):
            fake.close()


def test_what_the_checks_read_from_a_server(tmp_path):
    from triton_slots.admin import TritonAdmin, TritonAdminError

    fake = FakeTriton(tmp_path)
    try:
        admin = TritonAdmin(fake.endpoint, timeout=5)
        assert admin.server_version() == "2.51.0" and admin.explicit_control() is True
        fake.explicit = False
        assert admin.explicit_control() is False
        fake.explicit = None  # neither: an error that says something else
        with pytest.raises(TritonAdminError, match=r"model control check: \{'error': "
                                                   "'internal error'}"):
            admin.explicit_control()
        fake.version = None  # metadata without a version
        with pytest.raises(TritonAdminError, match="server metadata"):
            admin.server_version()
    finally:
        fake.close()
