"""The embedded store: one SQLite file (WAL) beside the control plane's state. One
control plane per file: it always leads, and nothing else is told of changes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from triton_slots import sqlite
from turnout.store.base import Store

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


class SqliteStore(Store):
    """Each call opens its own connection (safe across threads)."""

    ERRORS = (sqlite3.Error, OSError)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        sqlite.initialise(path, _SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.connect(self.path)

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite.transaction(self.path)
