"""The state store's contract, on both implementations (SQLite file, real PostgreSQL), and
what only the shared store does: leadership, change notices, replica reports."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from turnout.store import (
    AuditEntry,
    DeliveryState,
    Fenced,
    Outgoing,
    ReplicaReport,
    SqliteStore,
    StoreUnavailable,
    open_store,
)
from turnout.store.postgresql import PostgresStore
from turnout.weights import Weights

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_pg(postgres):
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS weights, rollouts, audit, replicas, slot_servers, "
                     "leadership, outbox")
    return postgres.url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        made = open_store(tmp_path / "state.db")
        assert isinstance(made, SqliteStore)
    else:
        made = open_store(request.getfixturevalue("fresh_pg"))
        assert isinstance(made, PostgresStore)
    yield made
    made.close()


def test_weights_default_then_durable(store):
    assert store.weights() == Weights()
    store.set_weights(Weights.with_green(30), actor="t", message="m")
    assert store.weights() == Weights.with_green(30)
    [entry] = store.history()
    assert (entry.kind, entry.actor, entry.message, entry.weights) == \
        ("weights", "t", "m", {"blue": 70, "green": 30})


def test_commit_is_one_transaction_and_rollouts_are_found(store):
    store.commit(rollout=("r1", "pending", False, {"id": "r1", "n": 1}),
                 weights=Weights.with_green(10),
                 audit=[AuditEntry(kind="apply", actor="a", rollout="r1", evidence={"x": 1})])
    assert store.active_rollout() == {"id": "r1", "n": 1}
    store.commit(rollout=("r1", "promoted", True, {"id": "r1", "n": 2}))
    assert store.active_rollout() is None
    assert store.latest_rollout() == {"id": "r1", "n": 2}
    assert store.rollout("r1") == {"id": "r1", "n": 2} and store.rollout("nope") is None
    assert store.history(rollout="r1")[0].evidence == {"x": 1}
    with pytest.raises(StoreUnavailable):  # a failing entry takes the whole commit back
        store.commit(weights=Weights.with_green(90),
                     audit=[AuditEntry(kind="k", actor=None)])  # type: ignore[arg-type]
    assert store.weights() == Weights.with_green(10)


def test_history_is_oldest_first_and_limited(store):
    for i in range(5):
        store.commit(audit=[AuditEntry(kind="k", actor="a", message=str(i))])
    assert [e.message for e in store.history(limit=3)] == ["2", "3", "4"]
    seqs = [e.seq for e in store.history()]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


def test_embedded_store_always_leads_and_has_no_replicas(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    assert not store.replicated
    assert store.hold_leadership("x") and store.replicas() == []


def test_unsupported_scheme_is_refused():
    with pytest.raises(StoreUnavailable, match="unsupported scheme"):
        open_store("mysql://x/y")


def test_exactly_one_replica_leads_and_resigning_hands_over(fresh_pg):
    a, b = PostgresStore(fresh_pg), PostgresStore(fresh_pg)
    try:
        assert a.hold_leadership("a")
        assert not b.hold_leadership("b")
        assert a.hold_leadership("a")  # still held
        a.resign()
        assert b.hold_leadership("b")
        assert not a.hold_leadership("a")
    finally:
        a.close()
        b.close()


def test_a_leader_whose_session_dies_loses_leadership(fresh_pg):
    a, b = PostgresStore(fresh_pg), PostgresStore(fresh_pg)
    try:
        assert a.hold_leadership("a")
        with psycopg.connect(fresh_pg, autocommit=True) as admin:  # as if its host died
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks "
                          "WHERE locktype='advisory'")
        time.sleep(0.1)
        assert not a.hold_leadership("a")  # it cannot prove it leads: it stops
        assert b.hold_leadership("b")
    finally:
        a.close()
        b.close()


def test_writes_are_announced_to_listeners(fresh_pg):
    writer, reader = PostgresStore(fresh_pg), PostgresStore(fresh_pg)
    seen: list[str] = []
    stop = threading.Event()
    listening = threading.Thread(target=reader.listen,
                                 args=(lambda c: seen.append(c.kind), stop.is_set))
    listening.start()
    try:
        deadline = time.monotonic() + 5
        while "resync" not in seen:  # listening now
            assert time.monotonic() < deadline
            time.sleep(0.01)
        writer.set_weights(Weights.with_green(20), actor="t")
        writer.commit(rollout=("r", "pending", False, {}))
        while not {"weights", "rollout"} <= set(seen):
            assert time.monotonic() < deadline, seen
            time.sleep(0.01)
    finally:
        stop.set()
        listening.join(5)
        writer.close()
        reader.close()
    assert not listening.is_alive()


def test_replica_reports_are_upserted(fresh_pg):
    store = PostgresStore(fresh_pg)
    try:
        store.report(ReplicaReport("r1", "http://a", True, "v1", 3, 2, 10.0))
        store.report(ReplicaReport("r2", "http://b", False, "v1", 1, 1, 11.0))
        store.report(ReplicaReport("r1", "http://a", False, "v2", 4, 4, 12.0))
        assert store.replicas() == [
            ReplicaReport("r1", "http://a", False, "v2", 4, 4, 12.0),
            ReplicaReport("r2", "http://b", False, "v1", 1, 1, 11.0)]
    finally:
        store.close()


def test_password_is_not_shown_in_messages(postgres):
    url = postgres.url.replace("turnout@", "turnout:s3cret@")
    store = PostgresStore(url)
    try:
        assert "s3cret" not in store.where and "turnout:***@" in store.where
    finally:
        store.close()


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
        PostgresStore("postgresql://turnout@127.0.0.1:1/turnout")


def test_a_replica_whose_session_ends_is_reported_dead_at_once(fresh_pg):
    a, b = PostgresStore(fresh_pg), PostgresStore(fresh_pg)
    try:
        a.report(ReplicaReport("a", "", True, "v", 1, 1, time.time()))
        assert [r.alive for r in b.replicas()] == [True]
        a.close()  # as when its process is killed: the session ends
        time.sleep(0.1)
        assert [r.alive for r in b.replicas()] == [False]
    finally:
        b.close()


def test_slot_server_lists_are_durable_with_their_audit_entry(store):
    assert store.slot_servers() == {}
    one = {"host": "10.0.0.1", "http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}
    two = dict(one, host="10.0.0.2")
    store.set_slot_servers("blue", [one, two], actor="ops", message="server added")
    store.set_slot_servers("green", [], actor="ops", message="server removed")
    store.set_slot_servers("blue", [two], actor="ops2", message="server 10.0.0.1 removed")
    assert store.slot_servers() == {"blue": [two], "green": []}
    assert [(e.kind, e.actor, e.message) for e in store.history()] == [
        ("servers", "ops", "server added"), ("servers", "ops", "server removed"),
        ("servers", "ops2", "server 10.0.0.1 removed")]


def test_slot_server_lists_survive_a_restart_and_a_failed_write_changes_nothing(tmp_path):
    from triton_slots.discovery import DiscoveryError
    from turnout.slots import SlotServers

    path = tmp_path / "state.db"
    one = {"host": "10.0.0.1", "http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}
    SqliteStore(path).set_slot_servers("blue", [one], actor="ops", message="added")
    store = SqliteStore(path)
    servers = SlotServers(store)
    assert [e.grpc_address for e in servers.stored("blue")] == ["10.0.0.1:8001"]
    assert servers.stored("green") is None  # never edited: the configuration's list holds

    class AuditFails(SqliteStore):  # the audit entry's insert fails after the list's
        def _q(self, sql: str) -> str:
            return sql.replace("INSERT INTO audit", "INSERT INTO no_such_table")

    with pytest.raises(StoreUnavailable, match=f"state store {path}: no such table"):
        AuditFails(path).set_slot_servers("blue", [], actor="ops", message="gone")
    assert store.slot_servers() == {"blue": [one]}
    assert len(store.history()) == 1
    path.unlink()
    path.mkdir()  # a store that cannot be read: discovery keeps the slot's servers
    with pytest.raises(DiscoveryError, match="the state store cannot list slot blue's "
                                             "servers now"):
        SlotServers(store).stored("blue")


# ---- fencing: a deposed leader's writes are refused in their own transaction -------------

def _terminate_lock_session(url: str) -> None:
    """End the leader's lock session only (as if that one connection broke); its other
    connection keeps working."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks "
                      "WHERE locktype='advisory'")


def test_a_deposed_leaders_next_write_is_refused_and_changes_nothing(fresh_pg):
    a, b = PostgresStore(fresh_pg), PostgresStore(fresh_pg)
    told: list[str] = []
    a.on_fenced = told.append
    try:
        assert a.hold_leadership("a") and a.epoch == 1
        a.set_weights(Weights.with_green(10), actor="a")  # the leader writes
        _terminate_lock_session(fresh_pg)
        time.sleep(0.1)
        assert b.hold_leadership("b") and b.epoch == 2
        assert a.leader_epoch()[:2] == (2, "b")  # type: ignore[index]
        # a has not noticed (no poll yet) and its query connection works: still refused.
        with pytest.raises(Fenced, match=r"epoch 1 was taken over.*epoch 2 of replica b"):
            a.commit(rollout=("r", "shifting", False, {"id": "r"}),
                     weights=Weights.with_green(90),
                     audit=[AuditEntry(kind="weights", actor="a")],
                     outbox=[Outgoing("x", {"url": "http://x"}, {"kind": "started"})])
        with pytest.raises(Fenced):
            a.set_slot_servers("blue", [], actor="a", message="m")
        assert told and "no longer leads" in told[0]
        assert a.weights() == Weights.with_green(10)  # nothing of it was written
        assert a.rollout("r") is None and a.slot_servers() == {}
        assert a.pending_deliveries() == []
        assert [e.actor for e in a.history()] == ["a"]  # only the write made while leading
        b.set_weights(Weights.with_green(20), actor="b")  # the new leader writes
        assert not a.hold_leadership("a")  # and a, polling, finds it no longer leads
    finally:
        a.close()
        b.close()


def test_a_leader_that_sees_a_newer_epoch_steps_down_though_its_session_lives(fresh_pg):
    a = PostgresStore(fresh_pg)
    try:
        assert a.hold_leadership("a")
        with psycopg.connect(fresh_pg, autocommit=True) as admin:  # a newer leader's epoch
            admin.execute("UPDATE leadership SET epoch = epoch + 1, replica = 'z'")
        assert not a.hold_leadership("a")
        assert a.hold_leadership("a") and a.epoch == 3  # retaken: a new epoch again
    finally:
        a.close()


def test_a_second_control_plane_on_one_file_fences_the_first(tmp_path):
    first, second = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    assert first.hold_leadership("one") and first.epoch == 1
    first.set_weights(Weights.with_green(10), actor="one")
    assert second.hold_leadership("two") and second.epoch == 2
    with pytest.raises(Fenced, match="epoch 2 of replica two"):
        first.set_weights(Weights.with_green(50), actor="one")
    assert not first.hold_leadership("one") and second.hold_leadership("two")
    second.set_weights(Weights.with_green(20), actor="two")
    assert first.weights() == Weights.with_green(20)
    unfenced = SqliteStore(tmp_path / "s.db")  # a tool that never led writes unfenced
    unfenced.commit(audit=[AuditEntry(kind="k", actor="tool")])
    assert [e.actor for e in first.history()] == ["one", "two", "tool"]


def test_outbox_rows_are_written_with_the_decision_and_read_in_order(store):
    store.hold_leadership("me")
    store.commit(weights=Weights.with_green(10), outbox=[
        Outgoing("r1", {"url": "http://a"}, {"kind": "started", "n": 1}),
        Outgoing("r2", {"url": "http://b"}, {"kind": "started", "n": 1})])
    store.commit(outbox=[Outgoing("r1", {"url": "http://a"}, {"kind": "promoted", "n": 2})])
    pending = store.pending_deliveries()
    assert [(d.receiver, d.notice["n"]) for d in pending] == [("r1", 1), ("r2", 1), ("r1", 2)]
    assert [d.seq for d in pending] == sorted(d.seq for d in pending)
    store.record_delivery(pending[0].seq, DeliveryState.DELIVERED, attempts=1)
    store.record_delivery(pending[1].seq, DeliveryState.PENDING, attempts=2, next_at=5.0,
                          error="HTTP 503")
    store.record_delivery(pending[2].seq, DeliveryState.FAILED, attempts=6, error="boom")
    [left] = store.pending_deliveries()
    assert (left.receiver, left.attempts, left.next_at) == ("r2", 2, 5.0)
    assert store.pending_receivers() == ["r2"]
    assert store.pending_deliveries(receiver="r1") == []
    assert store.pending_deliveries(receiver="r2") == [left]
    assert store.delivery_counts() == {"pending": 1, "delivered": 1, "failed": 1}
    shown = {row["seq"]: row for row in store.deliveries()}
    assert shown[pending[2].seq]["state"] == "failed" and \
        shown[pending[2].seq]["error"] == "boom"
    with pytest.raises(StoreUnavailable):  # a failing row takes the decision back with it
        store.commit(weights=Weights.with_green(90),
                     outbox=[Outgoing(None, {}, {})])  # type: ignore[arg-type]
    assert store.weights() == Weights.with_green(10)


async def test_a_leader_cut_from_its_lock_decides_nothing_that_is_pushed(fresh_pg, tmp_path):
    """The rollout driver on real PostgreSQL: its lock session is terminated while its
    query connection works, another replica takes over, and before any poll notices the
    old leader's next decision (an abort, a safe direction it would otherwise act on
    before storing) is refused and never reaches the push port."""
    from tests.test_driver import Controller, FakePlane, Healthy, baking_at_20
    from tests.zoo import write_model
    from triton_slots.registry import LocalRegistry

    registry = LocalRegistry(tmp_path / "registry")
    registry.push(write_model(tmp_path / "pair", "pair"), name="pair", version="v2")
    a, b = PostgresStore(fresh_pg), PostgresStore(fresh_pg)
    plane = FakePlane()
    controller = Controller(plane, a, registry=registry, provider=Healthy(), tick_s=0.01)
    try:
        assert a.hold_leadership("a")
        await baking_at_20(controller)
        pushed = list(plane.pushes)
        _terminate_lock_session(fresh_pg)
        await asyncio.sleep(0.1)
        assert b.hold_leadership("b")
        with pytest.raises(Fenced):
            await controller.command("abort", actor="sre")
        await asyncio.sleep(0.2)
        assert plane.pushes == pushed and plane.weights.green == 20
        assert b.latest_rollout()["phase"] == "baking" and b.weights().green == 20
        assert not [e for e in b.history() if e.actor == "sre"]
    finally:
        await controller.stop()
        a.close()
        b.close()
