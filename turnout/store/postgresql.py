"""The shared store: one PostgreSQL database for any number of control-plane replicas.

* **Leadership** is a session advisory lock held on a connection of its own: exactly one
  replica holds it; it is released by PostgreSQL the moment the holder's session ends
  (process killed, host gone: the socket closes), and the holder gives it up when it can
  no longer reach the database (it cannot prove it still leads).
* **Fencing**: taking leadership begins a new epoch (a counter in the ``leadership``
  table); every write checks, in its own transaction, that its epoch is still the store's,
  so a deposed leader that has not noticed yet (its lock session ended while its other
  connection works, a pause) cannot write, and so cannot act: decisions are stored before
  they are pushed.
* **Change notices**: every write of weights or rollout state sends ``NOTIFY turnout``
  inside its transaction (delivered on commit); followers ``LISTEN`` on a connection of
  their own and reload what changed.
* **Reports**: each replica records how many of its proxies hold its current route
  version, so the leader can count every proxy on every replica.

Queries run on one connection per purpose, each guarded by a lock (the store is called
from the event loop and from worker threads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from turnout.store.base import Change, ReplicaReport, Store, StoreUnavailable, schema

log = logging.getLogger("turnout.store.postgresql")

CHANNEL = "turnout"
LEADER_LOCK = 0x7475726E  # "turn": the advisory lock whose holder leads
SCHEMA_LOCK = 0x7475726F  # serialises schema creation between replicas starting together
CONNECT_TIMEOUT_S = 3
#: A partition must end a session in seconds, not TCP's default quarter of an hour: sent
#: data unacknowledged for TCP_USER_TIMEOUT_MS fails the connection, and keepalives probe an
#: idle one after 1 s (3 unanswered, 1 s apart, end it). The server should say the same
#: (``tcp_user_timeout``, ``tcp_keepalives_*``: see docs/fleet.md) so that a leader cut off
#: loses its lock session, and so its leadership, as fast.
TCP_USER_TIMEOUT_MS = 3000
CONNECTION_OPTIONS: dict[str, int] = {
    "connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 1,
    "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": TCP_USER_TIMEOUT_MS}

_SCHEMA = schema(real="DOUBLE PRECISION", serial_key="BIGSERIAL PRIMARY KEY") + """
CREATE TABLE IF NOT EXISTS replicas (
    replica TEXT PRIMARY KEY,
    api_url TEXT NOT NULL DEFAULT '',
    leader BOOLEAN NOT NULL DEFAULT FALSE,
    rds_version TEXT NOT NULL DEFAULT '',
    proxies INTEGER NOT NULL DEFAULT 0,
    in_sync INTEGER NOT NULL DEFAULT 0,
    seen DOUBLE PRECISION NOT NULL,
    session INTEGER NOT NULL DEFAULT 0  -- backend pid of its leadership session
);
"""


def _redact(url: str) -> str:
    """The URL without its password, in any form libpq takes (``user:pass@``, or a
    ``password=`` query parameter), for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join("password=***" if item.split("=", 1)[0].lower() == "password" else item
                     for item in parts.query.split("&")) if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class _Connection:
    """One connection, opened on first use and again after it breaks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                        **CONNECTION_OPTIONS)
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class PostgresStore(Store):
    ERRORS = (psycopg.Error, OSError)
    replicated = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = _redact(url)
        self._queries = _Connection(url)
        self._leadership = _Connection(url)
        self._leading = False
        try:
            with self.transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                db.execute(_SCHEMA)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"state store {self.where}: {exc}") from exc

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        with self._queries.lock:
            try:
                yield self._queries.get()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._queries.drop()  # reconnect on the next call
                raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self._connect() as conn, conn.transaction():
            yield conn

    def _notify(self, db: Any, kind: str) -> None:
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"kind": kind})))

    # ---- leadership ---------------------------------------------------------------------
    def hold_leadership(self, replica: str) -> bool:
        with self._leadership.lock:
            try:
                conn = self._leadership.get()
                if self._leading:
                    # The session (and so the lock) still lives, and no one took over.
                    row = conn.execute("SELECT epoch, replica FROM leadership WHERE id=1"
                                       ).fetchone()
                    if row is not None and row["epoch"] == self.epoch:
                        return True
                    log.error("leadership epoch %s was taken over (the store holds %s): "
                              "stepping down", self.epoch, row)
                    self._leading = False
                    self._leadership.drop()
                    return False
                row = conn.execute("SELECT pg_try_advisory_lock(%s) AS held",
                                   (LEADER_LOCK,)).fetchone()
                if row and row["held"]:
                    self.take_epoch(replica)  # older epochs' writes are refused from now
                    self._leading = True
                return self._leading
            except psycopg.Error as exc:
                if self._leading:
                    log.error("lost the database while leading (%s): stepping down", exc)
                self._leading = False
                self._leadership.drop()  # ends the session: the lock is released
                return False

    def resign(self) -> None:
        with self._leadership.lock:
            self._leading = False
            self._leadership.drop()

    # ---- reports ------------------------------------------------------------------------
    def _session(self) -> int:
        """The backend pid of this replica's leadership session: it lives exactly as long
        as this process holds its connection, so the others can tell it is gone."""
        with self._leadership.lock:
            try:
                return self._leadership.get().info.backend_pid
            except psycopg.Error:
                return 0

    def report(self, report: ReplicaReport) -> None:
        session = self._session()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO replicas (replica, api_url, leader, rds_version, proxies, "
                "in_sync, seen, session) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (replica) DO UPDATE SET api_url=excluded.api_url, "
                "leader=excluded.leader, rds_version=excluded.rds_version, "
                "proxies=excluded.proxies, in_sync=excluded.in_sync, seen=excluded.seen, "
                "session=excluded.session",
                (report.replica, report.api_url, report.leader, report.rds_version,
                 report.proxies, report.in_sync, report.seen, session))

    def replicas(self) -> list[ReplicaReport]:
        """Every replica that ever reported; ``alive`` is whether its session still
        exists in the database."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.replica, r.api_url, r.leader, r.rds_version, r.proxies, "
                "r.in_sync, r.seen, a.pid IS NOT NULL AS alive FROM replicas r "
                "LEFT JOIN pg_stat_activity a ON a.pid = r.session "
                "ORDER BY r.replica").fetchall()
        return [ReplicaReport(**row) for row in rows]

    # ---- change notices -----------------------------------------------------------------
    def listen(self, on_change: Callable[[Change], None],
               stopped: Callable[[], bool]) -> None:
        while not stopped():
            try:
                with psycopg.connect(self.url, autocommit=True,
                                     **CONNECTION_OPTIONS) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    on_change(Change("resync"))  # anything missed while not listening
                    while not stopped():
                        for notice in conn.notifies(timeout=0.5):
                            on_change(_change(notice.payload))
            except psycopg.Error as exc:
                log.warning("change notices interrupted (%s); listening again", exc)
                time.sleep(0.5)

    def close(self) -> None:
        self.resign()
        with self._queries.lock:
            self._queries.drop()


def _change(payload: str) -> Change:
    try:
        data = json.loads(payload)
        return Change(str(data.get("kind", "resync")), extra=data)
    except (ValueError, AttributeError):
        return Change("resync")
