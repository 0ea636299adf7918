"""The embedded registry: artifacts under ``<root>/artifacts/<name>/<version>/`` and
metadata in ``<root>/registry.db`` (SQLite, WAL).

A push copies into ``<root>/.staging/`` first and hashes there; then, inside one
``BEGIN IMMEDIATE`` transaction (writers serialise on it), it moves the files into place
and inserts the row. A crash before the commit leaves at most an unlisted directory,
which the next push of that name:version replaces. Each call opens its own connection,
so one LocalRegistry may be used from several threads and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from triton_slots import sqlite
from triton_slots.artifact import digest_of
from triton_slots.registry.backend import (
    ArtifactExistsError,
    ArtifactNotFoundError,
    ArtifactRecord,
    CorruptArtifactError,
    RegistryError,
    Stage,
    check_push,
    check_stage_args,
    check_transition,
)

#: The registry's index, in its root: a directory without it holds no registry.
REGISTRY_DB = "registry.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    created REAL NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    model_name TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    slot TEXT,
    stage TEXT NOT NULL DEFAULT 'candidate',
    stage_reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS reports (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (name, version, kind)
);
"""
class LocalRegistry:
    """A registry in a local directory. See the module docstring for its guarantees."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "artifacts").mkdir(exist_ok=True)
        (root / ".staging").mkdir(exist_ok=True)
        self._db = root / REGISTRY_DB
        sqlite.initialise(self._db, _SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.connect(self._db)

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.transaction(self._db)

    def _path(self, name: str, version: str) -> Path:
        return self.root / "artifacts" / name / version

    def _record(self, row: sqlite3.Row) -> ArtifactRecord:
        return ArtifactRecord(
            name=row["name"], version=row["version"], digest=row["digest"],
            created=row["created"], source=row["source"], model_name=row["model_name"],
            path=self._path(row["name"], row["version"]), labels=json.loads(row["labels"]),
            slot=row["slot"], stage=Stage(row["stage"]), stage_reason=row["stage_reason"],
        )

    # ---- writes -------------------------------------------------------------------------
    def push(self, directory: Path, *, name: str, version: str, source: str = "",
             labels: dict[str, str] | None = None) -> ArtifactRecord:
        """Check and store a model directory. Pushing identical content again returns the
        existing record; different content under the same name:version is refused."""
        info = check_push(directory, name, version)
        staging = self.root / ".staging" / uuid.uuid4().hex
        shutil.copytree(directory, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        try:
            digest = digest_of(staging)
            if digest != info.digest:
                raise RegistryError(f"{directory} changed while it was being pushed")
            _fsync_tree(staging)
            with self._write() as db:
                row = db.execute(
                    "SELECT * FROM artifacts WHERE name=? AND version=?", (name, version)
                ).fetchone()
                if row is not None:
                    if row["digest"] == digest:
                        return self._record(row)
                    raise ArtifactExistsError(
                        f"{name}:{version} already exists with digest {row['digest'][:12]} "
                        f"(this content is {digest[:12]}); push it under a new version"
                    )
                final = self._path(name, version)
                if final.exists():  # left by a push that crashed before its commit
                    shutil.rmtree(final)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, final)
                db.execute(
                    "INSERT INTO artifacts (name, version, digest, created, source, model_name,"
                    " labels) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, version, digest, time.time(), source or str(directory.resolve()),
                     info.model_name, json.dumps(labels or {}, sort_keys=True)),
                )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(name, version)

    def set_stage(self, name: str, version: str, stage: str, *, reason: str = "",
                  slot: str | None = None, clear_slot: bool = False) -> ArtifactRecord:
        """Change stage (checked against the allowed transitions) and optionally the slot.
        A slot holds one version of a model: assigning it clears it from the others."""
        check_stage_args(stage, slot)
        with self._write() as db:
            row = db.execute(
                "SELECT * FROM artifacts WHERE name=? AND version=?", (name, version)
            ).fetchone()
            if row is None:
                raise ArtifactNotFoundError(f"no artifact {name}:{version}")
            check_transition(f"{name}:{version}", row["stage"], stage)
            new_slot = None if clear_slot else (slot or row["slot"])
            if slot is not None:
                db.execute(
                    "UPDATE artifacts SET slot=NULL WHERE name=? AND slot=? AND version<>?",
                    (name, slot, version),
                )
            db.execute(
                "UPDATE artifacts SET stage=?, stage_reason=?, slot=? WHERE name=? AND version=?",
                (stage, reason, new_slot, name, version),
            )
        return self.get(name, version)

    def save_report(self, name: str, version: str, kind: str, body: dict[str, Any]) -> None:
        self.get(name, version)
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO reports (name, version, kind, created, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, version, kind, time.time(), json.dumps(body)),
            )

    # ---- reads --------------------------------------------------------------------------
    def get(self, name: str, version: str) -> ArtifactRecord:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM artifacts WHERE name=? AND version=?", (name, version)
            ).fetchone()
        if row is None:
            raise ArtifactNotFoundError(f"no artifact {name}:{version} in {self.root}")
        return self._record(row)

    def list(self, name: str | None = None) -> list[ArtifactRecord]:
        query, args = "SELECT * FROM artifacts", ()
        if name is not None:
            query, args = query + " WHERE name=?", (name,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY name, created", args).fetchall()
        return [self._record(r) for r in rows]

    def verify(self, name: str, version: str) -> ArtifactRecord:
        """The record, after checking the stored files still hash to its digest."""
        record = self.get(name, version)
        actual = digest_of(record.path) if record.path.is_dir() else "(missing)"
        if actual != record.digest:
            raise CorruptArtifactError(
                f"{record.ref}: stored files in {record.path} hash to {actual[:12]}, "
                f"registry recorded {record.digest[:12]}; refusing to use a corrupted artifact"
            )
        return record

    def report(self, name: str, version: str, kind: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT body FROM reports WHERE name=? AND version=? AND kind=?",
                (name, version, kind),
            ).fetchone()
        return json.loads(row["body"]) if row else None


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
