"""Replication logic (election, following, fleet-wide counts) against an in-memory store
with the shared store's contract; the real PostgreSQL store is tested in test_store.py and
the whole thing end to end in test_integration_replicas.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from turnout import replicas as replicas_module
from turnout.replicas import Replication
from turnout.store import AuditEntry, Change, ReplicaReport
from turnout.weights import Weights


class MemoryStore:
    replicated = True
    where = "memory"
    ERRORS = (OSError,)
    epoch: int | None = None

    def __init__(self) -> None:
        self.stored = Weights()
        self.holder: str | None = None
        self.reports: dict[str, ReplicaReport] = {}
        self.audit: list[AuditEntry] = []
        self.notices: list[Change] = []
        self.lock = threading.Lock()
        self.unreachable = False

    def weights(self) -> Weights:
        if self.unreachable:
            raise OSError("down")
        return self.stored

    def hold_leadership(self, replica: str) -> bool:
        if self.unreachable:
            return False
        with self.lock:
            if self.holder in (None, replica):
                self.holder = replica
                return True
            return False

    def resign(self) -> None:
        self.holder = None

    def report(self, report: ReplicaReport) -> None:
        self.reports[report.replica] = report

    def replicas(self) -> list[ReplicaReport]:
        return sorted(self.reports.values(), key=lambda r: r.replica)

    def commit(self, *, audit=(), **_) -> None:  # type: ignore[no-untyped-def]
        self.audit.extend(audit)

    def listen(self, on_change, stopped) -> None:  # type: ignore[no-untyped-def]
        import time

        while not stopped():
            while self.notices:
                on_change(self.notices.pop(0))
            time.sleep(0.01)


class FakePlane:
    def __init__(self) -> None:
        self.weights = Weights()
        self.applied: list[Weights] = []
        self.leading_calls: list[str] = []
        self.counts = ("v1", 2, 2)

    async def apply_weights(self, weights, **_):  # type: ignore[no-untyped-def]
        self.weights = weights
        self.applied.append(weights)

    def sync_counts(self) -> tuple[str, int, int]:
        return self.counts

    async def start_leading(self) -> None:
        self.leading_calls.append("start")

    async def stop_leading(self) -> None:
        self.leading_calls.append("stop")


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(replicas_module, "POLL_S", 0.01)
    monkeypatch.setattr(replicas_module, "REPORT_S", 0.05)


async def _until(predicate, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_an_embedded_store_always_leads():
    plane = FakePlane()

    class Solo(MemoryStore):
        replicated = False

    replication = Replication(plane, Solo(), replica="only")  # type: ignore[arg-type]
    await replication.start()
    assert replication.leading and plane.leading_calls == ["start"]
    await replication.stop()


async def test_a_follower_takes_over_when_the_leader_goes_and_says_so():
    store = MemoryStore()
    store.holder = "old"
    store.reports["old"] = ReplicaReport("old", "http://old", True, "v1", 1, 1, 1.0)
    store.stored = Weights.with_green(40)
    plane = FakePlane()
    replication = Replication(plane, store, replica="new", clock=lambda: 3.5)  # type: ignore[arg-type]
    await replication.start()
    try:
        await _until(lambda: plane.applied)  # a follower serves the stored weights
        assert not replication.leading and plane.leading_calls == []
        store.holder = None  # the old leader's session ended
        await _until(lambda: replication.leading)
        assert plane.leading_calls == ["start"]
        assert plane.weights == Weights.with_green(40)  # caught up before leading
        [entry] = [e for e in store.audit if e.kind == "leader"]
        assert entry.actor == "replica:new"
        assert "took over from old (last report 2.5 s ago)" in entry.message
        assert entry.weights == {"blue": 60, "green": 40}
        await _until(lambda: store.reports["new"].leader)
        # what status pages show comes from the heartbeat's read, not a query per request
        await _until(lambda: [(r.replica, r.leader) for r in replication.peers]
                     == [("new", True), ("old", True)])
    finally:
        await replication.stop()
    assert store.holder is None  # resigned on stop
    assert plane.leading_calls == ["start", "stop"]


async def test_a_leader_that_loses_the_store_stops_leading():
    store, plane = MemoryStore(), FakePlane()
    replication = Replication(plane, store, replica="a")  # type: ignore[arg-type]
    await replication.start()
    try:
        await _until(lambda: replication.leading)
        store.unreachable = True
        await _until(lambda: not replication.leading)
        assert plane.leading_calls == ["start", "stop"]
    finally:
        await replication.stop()


async def test_followers_push_what_a_notice_announces():
    store, plane = MemoryStore(), FakePlane()
    store.holder = "leader"
    replication = Replication(plane, store, replica="f")  # type: ignore[arg-type]
    await replication.start()
    try:
        store.stored = Weights.with_green(70)
        store.notices.append(Change("weights"))
        await _until(lambda: plane.weights == Weights.with_green(70), timeout=0.5)
        assert plane.applied == [Weights.with_green(70)]  # once, not per poll
    finally:
        await replication.stop()


async def test_fleet_counts_each_live_replicas_proxies():
    store, plane = MemoryStore(), FakePlane()
    now = 100.0
    store.reports = {
        "me": ReplicaReport("me", "", True, "v2", 5, 5, now),
        "b": ReplicaReport("b", "", False, "v2", 3, 3, now - 1),
        "stale": ReplicaReport("stale", "", False, "v1", 9, 0, now - 10),
    }
    replication = Replication(plane, store, replica="me", clock=lambda: now)  # type: ignore[arg-type]
    outcomes = await replication.fleet("v2", timeout=1.0)
    assert [o.outcome for o in outcomes] == ["acked"] * 3  # b's three; stale, self ignored
    assert all(o.node_id.startswith("b/") for o in outcomes)


async def test_fleet_waits_for_a_lagging_replica_then_names_who_is_missing():
    store, plane = MemoryStore(), FakePlane()
    store.reports = {"b": ReplicaReport("b", "", False, "v1", 2, 2, 100.0)}
    replication = Replication(plane, store, replica="me", clock=lambda: 100.0)  # type: ignore[arg-type]

    async def catch_up_later() -> None:
        await asyncio.sleep(0.1)
        store.reports["b"] = ReplicaReport("b", "", False, "v2", 2, 1, 100.0)

    task = asyncio.create_task(catch_up_later())
    outcomes = await replication.fleet("v2", timeout=0.3)
    await task
    assert sorted(o.outcome for o in outcomes) == ["acked", "timeout"]
    missing = next(o for o in outcomes if o.outcome == "timeout")
    assert "1/2 on v2" in missing.detail


async def test_a_single_store_has_no_fleet_to_wait_for():
    class Solo(MemoryStore):
        replicated = False

    replication = Replication(FakePlane(), Solo(), replica="x")  # type: ignore[arg-type]
    assert await replication.fleet("v", timeout=0.1) == []
    await replication.report()  # nothing to report to


async def test_a_refused_write_deposes_the_leader_at_once_and_status_says_why(monkeypatch):
    monkeypatch.setattr(replicas_module, "POLL_S", 60.0)  # no poll helps: the fence alone
    store, plane = MemoryStore(), FakePlane()
    replication = Replication(plane, store, replica="a")  # type: ignore[arg-type]
    await replication.start()
    try:
        await _until(lambda: replication.leading)
        assert replication.describe()["deposed"] == ""
        store.holder = "b"
        await asyncio.to_thread(store.on_fenced, "epoch 1 was taken over")  # from a thread
        await _until(lambda: not replication.leading)
        assert plane.leading_calls == ["start", "stop"]
        assert "epoch 1 was taken over" in replication.describe()["deposed"]
    finally:
        await replication.stop()
    assert plane.leading_calls == ["start", "stop"]  # stopped once only


async def test_a_refused_write_on_a_follower_changes_nothing(monkeypatch):
    store, plane = MemoryStore(), FakePlane()
    store.holder = "b"
    replication = Replication(plane, store, replica="a")  # type: ignore[arg-type]
    await replication.start()
    try:
        await asyncio.to_thread(store.on_fenced, "late write")
        await asyncio.sleep(0.05)
        assert not replication.leading and plane.leading_calls == []
        assert replication.describe()["deposed"] == ""
    finally:
        await replication.stop()
