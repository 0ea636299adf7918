"""Durable state behind one interface (:class:`Store`); :func:`open_store` is the one
place that chooses the implementation from a path or URL."""

from __future__ import annotations

from pathlib import Path

from turnout.store.base import (
    AuditEntry,
    Change,
    Delivery,
    DeliveryState,
    Fenced,
    Outgoing,
    ReplicaReport,
    Store,
    StoreUnavailable,
)
from turnout.store.sqlite import SqliteStore

__all__ = ["AuditEntry", "Change", "Delivery", "DeliveryState", "Fenced", "Outgoing",
           "ReplicaReport", "SqliteStore", "Store", "StoreUnavailable", "open_store"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(spec: str | Path) -> Store:
    """``postgresql://...`` (or ``postgres://``): the shared PostgreSQL store that
    replicas coordinate through; anything else: the path of an SQLite file."""
    text = str(spec)
    if text.startswith(_POSTGRES_SCHEMES):
        from turnout.store.postgresql import PostgresStore

        return PostgresStore(text)
    if "://" in text:
        raise StoreUnavailable(f"state store {text!r}: unsupported scheme (use a file path "
                               "or postgresql://)")
    return SqliteStore(Path(text))
