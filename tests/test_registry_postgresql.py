"""The shared registry against a real PostgreSQL: two control-plane replicas (each its own
cache directory, no shared disk) see the same artifacts, stages and reports; a push is all
or nothing; a cached copy that no longer matches its digest is unpacked again from the
database; over the size limit is refused before anything is stored."""

from __future__ import annotations

import psycopg
import pytest

from tests.zoo import write_model
from triton_slots.artifact import digest_of
from triton_slots.registry import (
    ArtifactExistsError,
    ArtifactNotFoundError,
    RegistryError,
    Stage,
    StageTransitionError,
    open_registry,
)
from triton_slots.registry.postgresql import PostgresRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(postgres, tmp_path):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS registry_artifacts, registry_reports")
    made = [open_registry(postgres.url, tmp_path / f"r{i}") for i in (1, 2)]
    assert all(isinstance(r, PostgresRegistry) for r in made)
    yield made
    for registry in made:
        registry.close()


def test_replicas_share_artifacts_stages_and_reports_through_the_database(replicas, tmp_path):
    one, two = replicas
    model = write_model(tmp_path / "pair", "pair")
    pushed = one.push(model, name="pair", version="v1", labels={"team": "ml"})
    assert pushed.path == tmp_path / "r1" / "cache" / "pair" / "v1"
    assert (pushed.stage, pushed.labels, pushed.digest) == ("candidate", {"team": "ml"},
                                                            digest_of(model))
    seen = two.verify("pair", "v1")  # unpacked into the other replica's own cache
    assert seen.path == tmp_path / "r2" / "cache" / "pair" / "v1"
    assert digest_of(seen.path) == pushed.digest
    assert one.push(model, name="pair", version="v1").created == pushed.created  # idempotent
    other = write_model(tmp_path / "pair2", "pair", variant="wrong")
    with pytest.raises(ArtifactExistsError, match=r"^pair:v1 already exists with digest "):
        two.push(other, name="pair", version="v1")
    two.push(other, name="pair", version="v2")
    one.set_stage("pair", "v1", Stage.ACTIVE, slot="blue", reason="initial")
    two.set_stage("pair", "v2", Stage.CANDIDATE, slot="blue")  # one holder per slot
    assert [(r.version, r.slot, r.stage) for r in one.list("pair")] == [
        ("v1", None, "active"), ("v2", "blue", "candidate")]
    with pytest.raises(StageTransitionError, match="cannot go from active to retired"):
        two.set_stage("pair", "v1", Stage.RETIRED)
    with pytest.raises(RegistryError, match="stage must be one of"):
        one.set_stage("pair", "v1", "gone")
    with pytest.raises(ArtifactNotFoundError, match="no artifact pair:v9"):
        one.get("pair", "v9")
    one.save_report("pair", "v2", "validation", {"passed": True})
    one.save_report("pair", "v2", "validation", {"passed": False})
    assert two.report("pair", "v2", "validation") == {"passed": False}
    assert two.report("pair", "v1", "validation") is None
    assert [r.ref for r in two.list()] == ["pair:v1", "pair:v2"]


def test_a_cached_copy_that_changed_is_unpacked_again_and_pushes_are_checked(replicas,
                                                                         tmp_path):
    one, _ = replicas
    record = one.push(write_model(tmp_path / "pair", "pair"), name="pair", version="v1")
    (record.path / "1" / "model.py").write_text("# tampered\n")
    assert digest_of(one.verify("pair", "v1").path) == record.digest
    with pytest.raises(RegistryError, match="does not match --name 'text'"):
        one.push(write_model(tmp_path / "x", "pair"), name="text", version="v1")
    with pytest.raises(RegistryError, match="must be letters, digits"):
        one.push(write_model(tmp_path / "y", "pair"), name="pair", version="../v1")
    assert [r.ref for r in one.list()] == ["pair:v1"]


def test_over_the_size_limit_is_refused_before_anything_is_stored(replicas, tmp_path,
                                                                 monkeypatch):
    from triton_slots.registry import postgresql

    one, _ = replicas
    monkeypatch.setattr(postgresql, "MAX_ARTIFACT_BYTES", 1024)
    model = write_model(tmp_path / "pair", "pair")
    (model / "1" / "weights.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(RegistryError, match=r"^pair:v1 is 0\.0 MiB; the shared registry keeps"
                                            r" at most 0 MiB per artifact$"):
        one.push(model, name="pair", version="v1")
    assert one.list() == []


def test_an_unreachable_database_is_a_registry_error_and_the_next_call_reconnects(postgres,
                                                                                tmp_path):
    registry = PostgresRegistry(postgres.url, tmp_path / "cache")
    try:
        registry._conn.close()  # the server dropped the connection
        assert registry.list() is not None  # opened again
    finally:
        registry.close()
    with pytest.raises(RegistryError, match="registry database unreachable"):
        PostgresRegistry("postgresql://turnout@127.0.0.1:1/none", tmp_path / "c2")
