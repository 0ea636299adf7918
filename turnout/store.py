"""Durable state: weights, rollouts and the audit log, in one SQLite database (WAL).

Weights and rollout state change in one transaction, written *before* any push, so a
control plane killed at any moment restarts serving exactly the weights last decided.
The audit log is append-only. Each call opens its own connection (safe across threads).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_slots import sqlite
from turnout.errors import TurnoutError
from turnout.weights import Weights

_SCHEMA = """
CREATE TABLE IF NOT EXISTS weights (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    blue INTEGER NOT NULL,
    green INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    phase TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    rollout TEXT,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase_from TEXT,
    phase_to TEXT,
    weights TEXT,
    digests TEXT,
    evidence TEXT,
    message TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log: when, who or what, what changed, and the evidence."""

    kind: str
    actor: str
    message: str = ""
    rollout: str | None = None
    phase_from: str | None = None
    phase_to: str | None = None
    weights: dict[str, int] | None = None
    digests: dict[str, str] | None = None
    evidence: Any = None
    at: float = 0.0
    seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StoreUnavailable(TurnoutError):
    """A state write failed (disk full, read-only, locked, I/O error); nothing was written.
    The API answers 503 with this message."""


class Store:
    """The control plane's durable state. See the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        sqlite.initialise(path, _SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.connect(self.path)

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.transaction(self.path)

    # ---- weights ------------------------------------------------------------------------
    def weights(self) -> Weights:
        with self._connect() as db:
            row = db.execute("SELECT blue, green FROM weights WHERE id=1").fetchone()
        return Weights(blue=row["blue"], green=row["green"]) if row else Weights()

    @staticmethod
    def _put_weights(db: sqlite3.Connection, weights: Weights) -> None:
        db.execute(
            "INSERT INTO weights (id, blue, green, updated) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET blue=excluded.blue, green=excluded.green, "
            "updated=excluded.updated",
            (weights.blue, weights.green, time.time()),
        )

    # ---- rollouts -----------------------------------------------------------------------
    def commit(
        self,
        *,
        rollout: tuple[str, str, bool, dict[str, Any]] | None = None,
        weights: Weights | None = None,
        audit: list[AuditEntry] | tuple[AuditEntry, ...] = (),
    ) -> None:
        """Write a rollout's state (id, phase, terminal, body), the weights and audit
        entries in one transaction; raises :class:`StoreUnavailable` if it fails."""
        try:
            self._commit(rollout, weights, audit)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"state store {self.path}: {exc}") from exc

    def _commit(self, rollout: tuple[str, str, bool, dict[str, Any]] | None,
                weights: Weights | None, audit: list[AuditEntry] | tuple[AuditEntry, ...]
                ) -> None:
        now = time.time()
        with self.transaction() as db:
            if rollout is not None:
                rid, phase, terminal, body = rollout
                db.execute(
                    "INSERT INTO rollouts (id, created, updated, phase, terminal, state) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "updated=excluded.updated, phase=excluded.phase, "
                    "terminal=excluded.terminal, state=excluded.state",
                    (rid, now, now, phase, int(terminal), json.dumps(body)),
                )
            if weights is not None:
                self._put_weights(db, weights)
            for entry in audit:
                db.execute(
                    "INSERT INTO audit (at, rollout, actor, kind, phase_from, phase_to, "
                    "weights, digests, evidence, message) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (entry.at or now, entry.rollout, entry.actor, entry.kind,
                     entry.phase_from, entry.phase_to,
                     json.dumps(entry.weights) if entry.weights is not None else None,
                     json.dumps(entry.digests) if entry.digests is not None else None,
                     json.dumps(entry.evidence) if entry.evidence is not None else None,
                     entry.message),
                )

    def set_weights(self, weights: Weights, *, actor: str, message: str = "") -> None:
        self.commit(weights=weights, audit=[AuditEntry(
            kind="weights", actor=actor, message=message, weights=weights.as_dict())])

    def rollout(self, rid: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT state FROM rollouts WHERE id=?", (rid,)).fetchone()
        return json.loads(row["state"]) if row else None

    def active_rollout(self) -> dict[str, Any] | None:
        """The newest rollout that has not reached a terminal phase, if any."""
        with self._connect() as db:
            row = db.execute(
                "SELECT state FROM rollouts WHERE terminal=0 ORDER BY created DESC LIMIT 1"
            ).fetchone()
        return json.loads(row["state"]) if row else None

    def latest_rollout(self) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT state FROM rollouts ORDER BY created DESC, updated DESC LIMIT 1"
            ).fetchone()
        return json.loads(row["state"]) if row else None

    def history(self, *, rollout: str | None = None, limit: int = 500) -> list[AuditEntry]:
        query = "SELECT * FROM audit"
        args: tuple[Any, ...] = ()
        if rollout is not None:
            query += " WHERE rollout=?"
            args = (rollout,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_entry(r) for r in reversed(rows)]


def _entry(row: sqlite3.Row) -> AuditEntry:
    def load(value: str | None) -> Any:
        return json.loads(value) if value is not None else None

    return AuditEntry(
        kind=row["kind"], actor=row["actor"], message=row["message"], rollout=row["rollout"],
        phase_from=row["phase_from"], phase_to=row["phase_to"], weights=load(row["weights"]),
        digests=load(row["digests"]), evidence=load(row["evidence"]), at=row["at"],
        seq=row["seq"],
    )
