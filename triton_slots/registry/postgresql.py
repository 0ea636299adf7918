"""The shared registry: artifacts in the PostgreSQL database every control-plane replica
reads, so replicas (and their hosts) share no directory.

Metadata, stages and reports are rows; an artifact's files are one gzip'd tar in its row
(at most :data:`MAX_ARTIFACT_BYTES` of files, the most a deploy carries anyway). A push
inserts the whole row in one transaction, so it is visible only once complete. Each
process unpacks an artifact into its own cache directory the first time it needs the files
(``record.path``); :meth:`verify` hashes that copy and, when it no longer matches (edited,
half-written), unpacks it again from the database before it refuses.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from triton_slots.artifact import artifact_size, digest_of, pack
from triton_slots.delivery.repository_api import MAX_ARTIFACT_BYTES
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

log = logging.getLogger("turnout.registry")
SCHEMA_LOCK = 0x74757272  # serialises schema creation between replicas starting together
CONNECT_TIMEOUT_S = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_artifacts (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    model_name TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    slot TEXT,
    stage TEXT NOT NULL DEFAULT 'candidate',
    stage_reason TEXT NOT NULL DEFAULT '',
    size BIGINT NOT NULL,
    files BYTEA NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS registry_reports (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (name, version, kind)
);
"""
_COLUMNS = ("name, version, digest, created, source, model_name, labels, slot, stage, "
            "stage_reason")


class PostgresRegistry:
    """See the module docstring. Safe to share between threads (one connection, locked)."""

    def __init__(self, url: str, cache: Path) -> None:
        self.url = url
        self.cache = cache
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        with self._db() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[psycopg.Cursor]:
        """A cursor in one transaction (committed on the way out); a connection that broke
        is opened again on the next call."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    # Keepalives and a TCP user timeout: a partition fails a call in
                    # seconds rather than hanging a deploy for TCP's quarter of an hour.
                    self._conn = psycopg.connect(self.url, row_factory=dict_row,
                                                 autocommit=True,
                                                 connect_timeout=CONNECT_TIMEOUT_S,
                                                 keepalives=1, keepalives_idle=1,
                                                 keepalives_interval=1, keepalives_count=3,
                                                 tcp_user_timeout=10_000)
                with self._conn.transaction(), self._conn.cursor() as cursor:
                    yield cursor
            except psycopg.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise RegistryError(f"registry database unreachable: {exc}") from exc
            except psycopg.Error as exc:
                raise RegistryError(f"registry database: {exc}") from exc

    def _path(self, name: str, version: str) -> Path:
        return self.cache / name / version

    def _record(self, row: dict[str, Any]) -> ArtifactRecord:
        return ArtifactRecord(
            name=row["name"], version=row["version"], digest=row["digest"],
            created=row["created"], source=row["source"], model_name=row["model_name"],
            path=self._path(row["name"], row["version"]), labels=json.loads(row["labels"]),
            slot=row["slot"], stage=Stage(row["stage"]), stage_reason=row["stage_reason"])

    # ---- writes -------------------------------------------------------------------------
    def push(self, directory: Path, *, name: str, version: str, source: str = "",
             labels: dict[str, str] | None = None) -> ArtifactRecord:
        """Check and store a model directory. Pushing identical content again returns the
        existing record; different content under the same name:version is refused."""
        info = check_push(directory, name, version)
        size = _size(directory, name=f"{name}:{version}")
        staging = self.cache / ".staging" / uuid.uuid4().hex
        shutil.copytree(directory, staging, symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        try:  # hashed and packed from one copy: what is stored is what was hashed
            if digest_of(staging) != info.digest:
                raise RegistryError(f"{directory} changed while it was being pushed")
            files = pack(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self._db() as db:
            db.execute(
                f"INSERT INTO registry_artifacts ({_COLUMNS}, size, files) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, NULL, 'candidate', '', %s, %s) "
                "ON CONFLICT (name, version) DO NOTHING",
                (name, version, info.digest, time.time(), source or str(directory.resolve()),
                 info.model_name, json.dumps(labels or {}, sort_keys=True), size, files))
            row = db.execute("SELECT digest FROM registry_artifacts WHERE name=%s AND "
                             "version=%s", (name, version)).fetchone()
        if row is None or row["digest"] != info.digest:
            existing = row["digest"][:12] if row else "(none)"
            raise ArtifactExistsError(
                f"{name}:{version} already exists with digest {existing} (this content is "
                f"{info.digest[:12]}); push it under a new version")
        return self.get(name, version)

    def set_stage(self, name: str, version: str, stage: str, *, reason: str = "",
                  slot: str | None = None, clear_slot: bool = False) -> ArtifactRecord:
        """As :meth:`LocalRegistry.set_stage`: checked transitions, one slot holder."""
        check_stage_args(stage, slot)
        with self._db() as db:
            row = db.execute("SELECT stage, slot FROM registry_artifacts WHERE name=%s AND "
                             "version=%s FOR UPDATE", (name, version)).fetchone()
            if row is None:
                raise ArtifactNotFoundError(f"no artifact {name}:{version}")
            check_transition(f"{name}:{version}", row["stage"], stage)
            if slot is not None:
                db.execute("UPDATE registry_artifacts SET slot=NULL WHERE name=%s AND slot=%s "
                           "AND version<>%s", (name, slot, version))
            db.execute("UPDATE registry_artifacts SET stage=%s, stage_reason=%s, slot=%s "
                       "WHERE name=%s AND version=%s",
                       (stage, reason, None if clear_slot else (slot or row["slot"]), name,
                        version))
        return self.get(name, version)

    def save_report(self, name: str, version: str, kind: str, body: dict[str, Any]) -> None:
        self.get(name, version)
        with self._db() as db:
            db.execute(
                "INSERT INTO registry_reports (name, version, kind, created, body) VALUES "
                "(%s, %s, %s, %s, %s) ON CONFLICT (name, version, kind) DO UPDATE SET "
                "created=excluded.created, body=excluded.body",
                (name, version, kind, time.time(), json.dumps(body)))

    # ---- reads --------------------------------------------------------------------------
    def get(self, name: str, version: str) -> ArtifactRecord:
        """The record, its files unpacked into this process's cache if not there yet."""
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM registry_artifacts WHERE name=%s AND "
                             "version=%s", (name, version)).fetchone()
        if row is None:
            raise ArtifactNotFoundError(f"no artifact {name}:{version} in the registry "
                                        "database")
        record = self._record(row)
        if not record.path.is_dir():
            self._unpack(record)
        return record

    def list(self, name: str | None = None) -> list[ArtifactRecord]:
        query, args = f"SELECT {_COLUMNS} FROM registry_artifacts", ()
        if name is not None:
            query, args = query + " WHERE name=%s", (name,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY name, created", args).fetchall()
        return [self._record(r) for r in rows]

    def verify(self, name: str, version: str) -> ArtifactRecord:
        """The record, after checking the cached files hash to its digest (unpacked again
        from the database once when they do not)."""
        record = self.get(name, version)
        if digest_of(record.path) != record.digest:
            log.warning("%s: the cached copy in %s does not match its digest; unpacking it "
                        "again from the database", record.ref, record.path)
            self._unpack(record)
            actual = digest_of(record.path)
            if actual != record.digest:
                raise CorruptArtifactError(
                    f"{record.ref}: stored files hash to {actual[:12]}, registry recorded "
                    f"{record.digest[:12]}; refusing to use a corrupted artifact")
        return record

    def report(self, name: str, version: str, kind: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT body FROM registry_reports WHERE name=%s AND version=%s "
                             "AND kind=%s", (name, version, kind)).fetchone()
        return json.loads(row["body"]) if row else None

    def _unpack(self, record: ArtifactRecord) -> None:
        with self._db() as db:
            row = db.execute("SELECT files FROM registry_artifacts WHERE name=%s AND "
                             "version=%s", (record.name, record.version)).fetchone()
        if row is None:
            raise ArtifactNotFoundError(f"no artifact {record.ref} in the registry database")
        staging = self.cache / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(row["files"])), mode="r:gz") as tar:
                tar.extractall(staging, filter="data")
            record.path.parent.mkdir(parents=True, exist_ok=True)
            old = record.path.with_name(f".{record.path.name}.{uuid.uuid4().hex}")
            if record.path.exists():
                record.path.rename(old)
            staging.rename(record.path)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _size(directory: Path, *, name: str) -> int:
    """The artifact's size; refused over the limit before anything is copied or read."""
    size = artifact_size(directory)
    if size > MAX_ARTIFACT_BYTES:
        raise RegistryError(f"{name} is {size / 2**20:.1f} MiB; the shared registry keeps at "
                            f"most {MAX_ARTIFACT_BYTES / 2**20:.0f} MiB per artifact")
    return size
