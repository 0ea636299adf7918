"""Durable state: weights, rollouts and the audit log, behind one interface with one
implementation per database (``sqlite``: the embedded default, one control plane;
``postgresql``: replicas sharing one database, with leadership and change notices).

Weights and rollout state change in one transaction, written *before* any push, so a
control plane killed at any moment restarts serving exactly the weights last decided.
The audit log is append-only. Queries are written once here with ``?`` placeholders;
each implementation supplies connections and its own dialect of the schema.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from turnout.errors import TurnoutError
from turnout.weights import Weights


def schema(*, real: str, serial_key: str) -> str:
    """The tables every store has, in a dialect: ``real`` is the floating-point type,
    ``serial_key`` the audit log's auto-incrementing key."""
    return f"""
CREATE TABLE IF NOT EXISTS weights (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    blue INTEGER NOT NULL,
    green INTEGER NOT NULL,
    updated {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    created {real} NOT NULL,
    updated {real} NOT NULL,
    phase TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq {serial_key},
    at {real} NOT NULL,
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
CREATE TABLE IF NOT EXISTS slot_servers (
    slot TEXT PRIMARY KEY,
    endpoints TEXT NOT NULL,
    updated {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    replica TEXT NOT NULL,
    since {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq {serial_key},
    created {real} NOT NULL,
    receiver TEXT NOT NULL,
    target TEXT NOT NULL,
    notice TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at {real} NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, receiver, seq);
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


class Fenced(StoreUnavailable):
    """A write by a leader another one has replaced (its leadership epoch is no longer the
    store's): refused in the write's own transaction, so nothing was written, and never
    worth retrying. Whoever gets it stops acting as leader."""


@dataclass(frozen=True)
class ReplicaReport:
    """One control-plane replica as the shared store last heard from it: whether it leads,
    the route version it serves, and how many of its proxies hold that version."""

    replica: str
    api_url: str
    leader: bool
    rds_version: str
    proxies: int
    in_sync: int
    seen: float  # wall clock of the last report
    #: Its database session still exists (a replica killed outright loses it at once);
    #: False only when the store can tell.
    alive: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outgoing:
    """A notice to deliver, written with the decision it tells of: ``receiver`` orders
    deliveries (one queue each), ``target`` is the receiver's settings as configured,
    ``notice`` the notice's fields."""

    receiver: str
    target: dict[str, Any]
    notice: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """A stored notice not delivered yet: its place (``seq``), tries so far and when the
    next is due (wall clock)."""

    seq: int
    receiver: str
    target: dict[str, Any]
    notice: dict[str, Any]
    attempts: int
    next_at: float


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed (kept, with the last error)


@dataclass
class Change:
    """A change notice from another replica (what changed: ``weights`` or ``rollout``)."""

    kind: str
    replica: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Store:
    """The control plane's durable state. See the module docstring. Subclasses supply
    :meth:`_connect`, :meth:`transaction`, :attr:`ERRORS` and the ``?`` dialect."""

    #: What a failed write raises (turned into :class:`StoreUnavailable`).
    ERRORS: tuple[type[BaseException], ...] = (OSError,)
    #: Several control planes may share this store (leadership, notices, reports).
    replicated = False
    where = ""  # for messages: the file or the database
    #: The leadership epoch this store's writes carry (taken with leadership; None: a
    #: tool or test that never led writes unfenced).
    epoch: int | None = None
    #: Called (from any thread) with the reason when a write is refused as fenced.
    on_fenced: Callable[[str], None] | None = None

    def _connect(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        """The query in this database's placeholder style (written with ``?``)."""
        return sql

    def _notify(self, db: Any, kind: str) -> None:
        """Tell other replicas, inside the committing transaction (replicated stores)."""

    # ---- weights ------------------------------------------------------------------------
    def weights(self) -> Weights:
        with self._connect() as db:
            row = db.execute("SELECT blue, green FROM weights WHERE id=1").fetchone()
        return Weights(blue=row["blue"], green=row["green"]) if row else Weights()

    def _put_weights(self, db: Any, weights: Weights) -> None:
        db.execute(self._q(
            "INSERT INTO weights (id, blue, green, updated) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET blue=excluded.blue, green=excluded.green, "
            "updated=excluded.updated"),
            (weights.blue, weights.green, time.time()),
        )
        self._notify(db, "weights")

    # ---- rollouts -----------------------------------------------------------------------
    def commit(
        self,
        *,
        rollout: tuple[str, str, bool, dict[str, Any]] | None = None,
        weights: Weights | None = None,
        audit: list[AuditEntry] | tuple[AuditEntry, ...] = (),
        outbox: list[Outgoing] | tuple[Outgoing, ...] = (),
    ) -> None:
        """Write a rollout's state (id, phase, terminal, body), the weights, audit entries
        and the notices to deliver in one transaction; raises :class:`StoreUnavailable` if
        it fails (:class:`Fenced` when this store's leadership was taken over)."""
        try:
            self._commit(rollout, weights, audit, outbox)
        except self.ERRORS as exc:
            raise StoreUnavailable(f"state store {self.where}: {exc}") from exc

    def _commit(self, rollout: tuple[str, str, bool, dict[str, Any]] | None,
                weights: Weights | None, audit: list[AuditEntry] | tuple[AuditEntry, ...],
                outbox: list[Outgoing] | tuple[Outgoing, ...]) -> None:
        now = time.time()
        with self.transaction() as db:
            self._fence(db)
            if rollout is not None:
                rid, phase, terminal, body = rollout
                db.execute(self._q(
                    "INSERT INTO rollouts (id, created, updated, phase, terminal, state) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "updated=excluded.updated, phase=excluded.phase, "
                    "terminal=excluded.terminal, state=excluded.state"),
                    (rid, now, now, phase, int(terminal), json.dumps(body)),
                )
                self._notify(db, "rollout")
            if weights is not None:
                self._put_weights(db, weights)
            for entry in audit:
                db.execute(self._q(
                    "INSERT INTO audit (at, rollout, actor, kind, phase_from, phase_to, "
                    "weights, digests, evidence, message) VALUES (?,?,?,?,?,?,?,?,?,?)"),
                    (entry.at or now, entry.rollout, entry.actor, entry.kind,
                     entry.phase_from, entry.phase_to,
                     json.dumps(entry.weights) if entry.weights is not None else None,
                     json.dumps(entry.digests) if entry.digests is not None else None,
                     json.dumps(entry.evidence) if entry.evidence is not None else None,
                     entry.message),
                )
            for out in outbox:
                db.execute(self._q(
                    "INSERT INTO outbox (created, receiver, target, notice) "
                    "VALUES (?, ?, ?, ?)"),
                    (now, out.receiver, json.dumps(out.target), json.dumps(out.notice)))

    def set_weights(self, weights: Weights, *, actor: str, message: str = "") -> None:
        self.commit(weights=weights, audit=[AuditEntry(
            kind="weights", actor=actor, message=message, weights=weights.as_dict())])

    def rollout(self, rid: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(self._q("SELECT state FROM rollouts WHERE id=?"), (rid,)).fetchone()
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

    def rollout_ids(self, name: str) -> list[str]:
        """The ids of the rollouts named ``name`` (a policy's metadata.name), oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT id, state FROM rollouts ORDER BY created").fetchall()
        return [row["id"] for row in rows if json.loads(row["state"]).get("name") == name]

    def history(self, *, rollout: str | list[str] | None = None, limit: int = 500
                ) -> list[AuditEntry]:
        """The last ``limit`` entries, oldest first; of one rollout id (or several)."""
        query = "SELECT * FROM audit"
        args: tuple[Any, ...] = ()
        if rollout is not None:
            ids = [rollout] if isinstance(rollout, str) else list(rollout) or [""]
            query += f" WHERE rollout IN ({', '.join('?' * len(ids))})"
            args = tuple(ids)
        with self._connect() as db:
            rows = db.execute(self._q(query + " ORDER BY seq DESC LIMIT ?"),
                              (*args, limit)).fetchall()
        return [_entry(r) for r in reversed(rows)]

    # ---- the outbox: notices delivered from the store, so none is lost ----------------------
    def pending_deliveries(self, limit: int = 200, *, receiver: str | None = None
                           ) -> list[Delivery]:
        """Notices not delivered yet (to ``receiver`` only, if given), oldest first (each
        receiver's in order)."""
        query = "SELECT seq, receiver, target, notice, attempts, next_at FROM outbox " \
            "WHERE state=?"
        args: tuple[Any, ...] = (DeliveryState.PENDING,)
        if receiver is not None:
            query, args = query + " AND receiver=?", (*args, receiver)
        with self._connect() as db:
            rows = db.execute(self._q(query + " ORDER BY seq LIMIT ?"), (*args, limit)
                              ).fetchall()
        return [Delivery(row["seq"], row["receiver"], json.loads(row["target"]),
                         json.loads(row["notice"]), row["attempts"], row["next_at"])
                for row in rows]

    def pending_receivers(self) -> list[str]:
        """The receivers with a notice not delivered yet."""
        with self._connect() as db:
            rows = db.execute(self._q("SELECT DISTINCT receiver FROM outbox WHERE state=?"),
                              (DeliveryState.PENDING,)).fetchall()
        return [row["receiver"] for row in rows]

    def record_delivery(self, seq: int, state: DeliveryState, *, attempts: int,
                        next_at: float = 0.0, error: str = "") -> None:
        """Record an attempt's outcome (fenced: a deposed leader stops delivering)."""
        try:
            with self.transaction() as db:
                self._fence(db)
                db.execute(self._q(
                    "UPDATE outbox SET state=?, attempts=?, next_at=?, error=? WHERE seq=?"),
                    (state, attempts, next_at, error[:500], seq))
        except self.ERRORS as exc:
            raise StoreUnavailable(f"state store {self.where}: {exc}") from exc

    def delivery_counts(self) -> dict[str, int]:
        """How many notices are pending, delivered and failed (status pages)."""
        with self._connect() as db:
            rows = db.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"
                              ).fetchall()
        counts = {str(state): 0 for state in DeliveryState}
        counts.update({row["state"]: int(row["n"]) for row in rows})
        return counts

    def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` outbox rows, newest first (status pages, tests)."""
        with self._connect() as db:
            rows = db.execute(self._q(
                "SELECT seq, created, receiver, notice, state, attempts, error FROM outbox "
                "ORDER BY seq DESC LIMIT ?"), (limit,)).fetchall()
        return [{**dict(row), "notice": json.loads(row["notice"])} for row in rows]

    # ---- slot servers an operator listed (`turnout slots`) ---------------------------------
    def slot_servers(self) -> dict[str, list[dict[str, Any]]]:
        """Each slot's server list as an operator last set it (slots never edited are
        absent: their configuration's list holds)."""
        with self._connect() as db:
            rows = db.execute("SELECT slot, endpoints FROM slot_servers").fetchall()
        return {row["slot"]: json.loads(row["endpoints"]) for row in rows}

    def set_slot_servers(self, slot: str, endpoints: list[dict[str, Any]], *, actor: str,
                         message: str) -> None:
        """Replace ``slot``'s server list, with its audit entry, in one transaction."""
        try:
            with self.transaction() as db:
                self._fence(db)
                db.execute(self._q(
                    "INSERT INTO slot_servers (slot, endpoints, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT(slot) DO UPDATE SET endpoints=excluded.endpoints, "
                    "updated=excluded.updated"), (slot, json.dumps(endpoints), time.time()))
                db.execute(self._q(
                    "INSERT INTO audit (at, actor, kind, message) VALUES (?, ?, ?, ?)"),
                    (time.time(), actor, "servers", message))
                self._notify(db, "servers")
        except self.ERRORS as exc:
            raise StoreUnavailable(f"state store {self.where}: {exc}") from exc

    # ---- fencing ------------------------------------------------------------------------
    def take_epoch(self, replica: str) -> int:
        """Begin a new leadership epoch held by ``replica``: from now on every write made
        under an older epoch is refused (:meth:`_fence`)."""
        with self.transaction() as db:
            db.execute(self._q(
                "INSERT INTO leadership (id, epoch, replica, since) VALUES (1, 1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET epoch=leadership.epoch + 1, "
                "replica=excluded.replica, since=excluded.since"), (replica, time.time()))
            row = db.execute("SELECT epoch FROM leadership WHERE id=1").fetchone()
        self.epoch = int(row["epoch"])
        return self.epoch

    def leader_epoch(self) -> tuple[int, str, float] | None:
        """The store's current epoch, its holder and since when (None before any)."""
        with self._connect() as db:
            row = db.execute("SELECT epoch, replica, since FROM leadership WHERE id=1"
                             ).fetchone()
        return (int(row["epoch"]), row["replica"], float(row["since"])) if row else None

    def _fence(self, db: Any) -> None:
        """Refuse this transaction's writes unless this store's epoch is still the
        store's: the row lock taken here orders it against a takeover's new epoch (a write
        either commits before it or sees it)."""
        if self.epoch is None:
            return
        touched = db.execute(self._q(
            "UPDATE leadership SET epoch=epoch WHERE id=1 AND epoch=?"), (self.epoch,))
        if touched.rowcount == 1:
            return
        row = db.execute("SELECT epoch, replica FROM leadership WHERE id=1").fetchone()
        now = f"epoch {row['epoch']} of replica {row['replica']}" if row else "no epoch"
        reason = (f"leadership epoch {self.epoch} was taken over (the store holds {now}): "
                  "this replica no longer leads; write refused")
        if self.on_fenced is not None:
            self.on_fenced(reason)
        raise Fenced(f"state store {self.where}: {reason}")

    # ---- replicas (replicated stores only; a single store is its own leader) ---------------
    def hold_leadership(self, replica: str) -> bool:
        """Take or keep leadership; False when another replica holds it (or the store
        cannot tell: a leader that cannot reach its store must stop leading). A single
        store's control plane leads from its first call, with a new epoch: a second
        control plane on the same file fences the first."""
        if self.epoch is None:
            self.take_epoch(replica)
            return True
        held = self.leader_epoch()
        return held is not None and held[0] == self.epoch

    def resign(self) -> None:
        """Give leadership up (at shutdown), so another replica takes over at once."""

    def report(self, report: ReplicaReport) -> None:
        """Record this replica's state for the others (its proxies' ACKs among them)."""

    def replicas(self) -> list[ReplicaReport]:
        return []

    def listen(self, on_change: Callable[[Change], None],
               stopped: Callable[[], bool]) -> None:
        """Block, calling ``on_change`` for each change notice, until ``stopped()``."""

    def close(self) -> None:
        """Release connections."""


def _entry(row: Any) -> AuditEntry:
    def load(value: str | None) -> Any:
        return json.loads(value) if value is not None else None

    return AuditEntry(
        kind=row["kind"], actor=row["actor"], message=row["message"], rollout=row["rollout"],
        phase_from=row["phase_from"], phase_to=row["phase_to"], weights=load(row["weights"]),
        digests=load(row["digests"]), evidence=load(row["evidence"]), at=row["at"],
        seq=row["seq"],
    )
