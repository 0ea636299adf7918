"""The local registry: artifact checks, digests, concurrency, crash safety, stages."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from pathlib import Path

import pytest

from triton_slots.artifact import ArtifactError, inspect
from triton_slots.registry import (
    ArtifactExistsError,
    CorruptArtifactError,
    LocalRegistry,
    RegistryError,
    StageTransitionError,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"


def _copy(tmp_path: Path, version: str = "v1", name: str = "art") -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / version, target)
    return target


def test_push_list_show_round_trip(tmp_path):
    registry = LocalRegistry(tmp_path / "reg")
    record = registry.push(EXAMPLES / "v1", name="classifier", version="v1",
                           labels={"team": "ml"})
    assert record.digest == inspect(EXAMPLES / "v1").digest
    assert record.stage == "candidate" and record.slot is None
    assert [r.ref for r in registry.list()] == ["classifier:v1"]
    assert registry.get("classifier", "v1").labels == {"team": "ml"}
    # Pushing identical content again is a no-op; different content is refused.
    assert registry.push(EXAMPLES / "v1", name="classifier", version="v1").digest == record.digest
    with pytest.raises(ArtifactExistsError, match="already exists"):
        registry.push(EXAMPLES / "v2", name="classifier", version="v1")


def test_broken_config_is_refused_with_file_and_line(tmp_path):
    art = _copy(tmp_path)
    config = art / "config.pbtxt"
    lines = config.read_text().splitlines()
    lines.insert(3, "  dims_typo: [ 16 ]")
    config.write_text("\n".join(lines))
    registry = LocalRegistry(tmp_path / "reg")
    with pytest.raises(ArtifactError) as info:
        registry.push(art, name="classifier", version="bad")
    assert f"{config}:4:" in str(info.value)
    assert "dims_typo" in str(info.value)
    assert registry.list() == []


def test_missing_version_files_are_refused(tmp_path):
    art = _copy(tmp_path)
    shutil.rmtree(art / "1")
    with pytest.raises(ArtifactError, match="no version directories"):
        LocalRegistry(tmp_path / "reg").push(art, name="classifier", version="v9")
    (art / "1").mkdir()
    with pytest.raises(ArtifactError, match="empty"):
        LocalRegistry(tmp_path / "reg").push(art, name="classifier", version="v9")


def test_name_must_match_config(tmp_path):
    with pytest.raises(RegistryError, match="does not match"):
        LocalRegistry(tmp_path / "reg").push(EXAMPLES / "v1", name="other", version="v1")


def test_corruption_is_detected(tmp_path):
    registry = LocalRegistry(tmp_path / "reg")
    record = registry.push(EXAMPLES / "v1", name="classifier", version="v1")
    (record.path / "1" / "weights.npz").write_bytes(b"tampered")
    with pytest.raises(CorruptArtifactError, match="hash to"):
        registry.verify("classifier", "v1")


def test_crash_before_commit_leaves_nothing_visible(tmp_path):
    registry = LocalRegistry(tmp_path / "reg")
    # A push that died after moving files but before its commit: a directory, no row.
    orphan = tmp_path / "reg" / "artifacts" / "classifier" / "v1"
    orphan.mkdir(parents=True)
    (orphan / "config.pbtxt").write_text("half written")
    assert registry.list() == []
    record = registry.push(EXAMPLES / "v1", name="classifier", version="v1")
    assert registry.verify("classifier", "v1").digest == record.digest


def _push_worker(root: str, source: str, barrier) -> str:
    barrier.wait()
    try:
        LocalRegistry(Path(root)).push(Path(source), name="classifier", version="race")
        return "pushed"
    except ArtifactExistsError:
        return "refused"


def test_concurrent_pushes_of_the_same_version_do_not_corrupt(tmp_path):
    root = tmp_path / "reg"
    LocalRegistry(root)
    sources = [str(EXAMPLES / ("v1" if i % 2 else "v2")) for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(sources))
        with ctx.Pool(len(sources)) as pool:
            outcomes = pool.starmap(_push_worker, [(str(root), s, barrier) for s in sources])
    registry = LocalRegistry(root)
    winner = registry.verify("classifier", "race")  # files match the recorded digest
    same = sum(1 for s in sources if inspect(Path(s)).digest == winner.digest)
    assert outcomes.count("pushed") == same  # identical pushes are idempotent
    assert outcomes.count("refused") == len(sources) - same
    with sqlite3.connect(root / "registry.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [r.ref for r in registry.list()] == ["classifier:race"]
    assert not list((root / ".staging").iterdir())


def test_stage_transitions_and_single_slot_holder(tmp_path):
    registry = LocalRegistry(tmp_path / "reg")
    registry.push(EXAMPLES / "v1", name="classifier", version="v1")
    registry.push(EXAMPLES / "v2", name="classifier", version="v2")
    registry.set_stage("classifier", "v1", "active", slot="blue")
    registry.set_stage("classifier", "v2", "candidate", slot="blue")
    assert registry.get("classifier", "v1").slot is None  # a slot holds one version
    with pytest.raises(StageTransitionError, match="active to retired"):
        registry.set_stage("classifier", "v1", "retired")  # must stand by first
    registry.set_stage("classifier", "v1", "standby")
    registry.set_stage("classifier", "v1", "retired")
    with pytest.raises(StageTransitionError, match="retired to active"):
        registry.set_stage("classifier", "v1", "active")
    with pytest.raises(RegistryError, match="stage must be"):
        registry.set_stage("classifier", "v2", "promoted")


@pytest.mark.parametrize("remove, hint", [
    ("]", "(the '[' opened at line 4 is not closed before line 10)"),
    ("  }", "(the '{' opened at line 5 is not closed before line 9)"),
])
def test_a_missing_bracket_is_named_where_it_was_opened(tmp_path, remove, hint):
    art = _copy(tmp_path)
    config = art / "config.pbtxt"
    lines = config.read_text().splitlines()
    del lines[lines.index(remove)]  # the first one: the input list's
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ArtifactError) as info:
        LocalRegistry(tmp_path / "reg").push(art, name="classifier", version="bad")
    assert str(info.value).endswith(hint), info.value
    assert str(info.value).startswith(f"{config}:")


def test_an_error_inside_a_bracket_gets_no_bracket_hint(tmp_path):
    art = _copy(tmp_path)
    config = art / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "INPUT"', 'name: "INPUT" name2: ='))
    with pytest.raises(ArtifactError) as info:
        LocalRegistry(tmp_path / "reg").push(art, name="classifier", version="bad")
    assert "is not closed" not in str(info.value) and f"{config}:6:" in str(info.value)


def test_embedded_databases_are_readable_by_their_owner_only(tmp_path):
    from turnout.store import SqliteStore

    LocalRegistry(tmp_path / "reg")
    SqliteStore(tmp_path / "state.db")
    assert (tmp_path / "reg" / "registry.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    (tmp_path / "old.db").write_bytes(b"")  # made 0644 by an earlier version
    (tmp_path / "old.db").chmod(0o644)
    SqliteStore(tmp_path / "old.db")
    assert (tmp_path / "old.db").stat().st_mode & 0o777 == 0o600
