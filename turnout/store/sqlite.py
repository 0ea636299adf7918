"""The embedded store: one SQLite file (WAL) beside the control plane's state. One
control plane per file: it always leads, and nothing else is told of changes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from triton_slots import sqlite
from turnout.store.base import Store, schema

_SCHEMA = schema(real="REAL", serial_key="INTEGER PRIMARY KEY AUTOINCREMENT")


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
