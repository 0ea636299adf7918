"""The snapshot cache's bookkeeping of one publication, driven directly (no gRPC): who
answered what and when, when the wait ends (everyone, a minimum fleet, an early quorum),
make-before-break, and what a timeout names."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.xds_fakes import snapshot
from xds_server import type_urls as t
from xds_server.cache import SnapshotCache
from xds_server.errors import InconsistentSnapshotError
from xds_server.snapshot import Snapshot

G = "fleet"


def streams(cache: SnapshotCache, count: int, types=t.ALL_TYPES):  # type: ignore[no-untyped-def]
    handles = []
    for i in range(count):
        handle = cache.open_stream(f"envoy-{i}", G)
        for type_url in types:
            cache.subscribed(handle, type_url)
        handles.append(handle)
    return handles


def with_retired_cluster(base: Snapshot) -> Snapshot:
    """``base`` plus a cluster (and its endpoints) that nothing routes to any more."""
    from xds_server import resources as r

    return Snapshot.build(
        listeners=base.resources(t.LISTENER).values(),
        routes=base.resources(t.ROUTE).values(),
        clusters=[*base.resources(t.CLUSTER).values(), r.grpc_cluster("slot_retired")],
        endpoints=[*base.resources(t.ENDPOINT).values(),
                   r.load_assignment("slot_retired", [r.HostPort("127.0.0.1", 9)])])


def answer(cache: SnapshotCache, handle, snap: Snapshot, *, nack: str = "") -> None:  # type: ignore[no-untyped-def]
    for type_url in sorted(handle.subscribed):
        if nack and type_url == t.CLUSTER:
            cache.nacked(handle, type_url, snap.version(type_url), nack)
        else:
            cache.acked(handle, type_url, snap.version(type_url))


async def test_each_proxy_is_recorded_once_with_its_answer_and_time():
    cache = SnapshotCache()
    cache.set_snapshot(G, snapshot(0))
    a, b, c = streams(cache, 3)
    snap = snapshot(10)
    started = time.monotonic()
    publication = cache.publish(G, snap)
    answer(cache, a, snap)
    answer(cache, a, snap)  # answering again records nothing more
    answer(cache, b, snap, nack="bad cluster")
    assert (publication.answered, publication.acked) == (2, 1)
    assert not publication.done.is_set()  # c has not answered
    result = await cache.wait(publication, timeout=0.2)
    by_node = {o.node_id: o for o in result.outcomes}
    assert [o.node_id for o in result.outcomes] == ["envoy-0", "envoy-1", "envoy-2"]
    assert by_node["envoy-0"].outcome == "acked" and by_node["envoy-0"].detail == ""
    assert by_node["envoy-1"].outcome == "nacked"
    assert by_node["envoy-1"].detail == "bad cluster"
    assert by_node["envoy-2"].outcome == "timeout" and by_node["envoy-2"].seconds is None
    assert by_node["envoy-2"].detail == "no answer for cds, eds, lds, rds"
    elapsed = time.monotonic() - started
    for node in ("envoy-0", "envoy-1"):
        assert 0 <= by_node[node].seconds <= elapsed
    assert result.seconds == max(by_node["envoy-0"].seconds, by_node["envoy-1"].seconds)
    assert result.quorum == 1.0 and not result.converged and result.group == G
    assert result.versions == snap.versions
    assert cache._groups[G].publications == []  # forgotten once waited for
    assert c.acked == {}


async def test_a_timeout_names_only_what_is_missing():
    cache = SnapshotCache()
    (handle,) = streams(cache, 1)
    snap = snapshot(10)
    publication = cache.publish(G, snap)
    cache.acked(handle, t.CLUSTER, snap.version(t.CLUSTER))
    cache.acked(handle, t.ROUTE, snap.version(t.ROUTE))
    result = await cache.wait(publication, timeout=0.05)
    assert result.outcomes[0].detail == "no answer for eds, lds"


async def test_the_wait_ends_when_everyone_answered_and_the_minimum_fleet_is_there():
    cache = SnapshotCache()
    (handle,) = streams(cache, 1)
    snap = snapshot(10)
    publication = cache.publish(G, snap, min_proxies=1)
    answer(cache, handle, snap)
    assert publication.done.is_set()  # exactly the minimum: done
    bigger = cache.publish(G, snapshot(20), min_proxies=2)
    answer(cache, handle, snapshot(20))
    assert not bigger.done.is_set()  # one of two
    late = streams(cache, 1)[0]  # a proxy connecting while the fleet is awaited counts
    answer(cache, late, snapshot(20))
    assert bigger.done.is_set()
    result = await cache.wait(bigger, timeout=1)
    assert result.converged and result.acked == 2


@pytest.mark.parametrize("early", [True, False])
async def test_an_early_quorum_ends_the_wait_only_when_asked_and_only_when_met(early):
    cache = SnapshotCache()
    handles = streams(cache, 4)
    snap = snapshot(10)
    publication = cache.publish(G, snap, quorum=0.5, early=early)
    answer(cache, handles[0], snap)
    assert not publication.done.is_set()  # 1 of the 2 needed
    answer(cache, handles[1], snap)
    assert publication.done.is_set() is early
    result = await cache.wait(publication, timeout=0.05)
    assert result.converged and result.quorum == 0.5
    assert sorted(o.node_id for o in result.stragglers) == ["envoy-2", "envoy-3"]


async def test_defaults_check_consistency_and_wait_for_everyone():
    cache = SnapshotCache()
    handles = streams(cache, 2)
    snap = snapshot(10)
    publication = cache.publish(G, snap)
    answer(cache, handles[0], snap)
    assert not publication.done.is_set()
    assert (publication.quorum, publication.early, publication.min_proxies) == (1.0, False, 0)
    broken = Snapshot.build(listeners=snap.resources(t.LISTENER).values(),
                            routes=snap.resources(t.ROUTE).values(), clusters=[],
                            endpoints=[])
    for publish in (lambda: cache.publish(G, broken),
                    lambda: cache.set_snapshot(G, broken)):
        with pytest.raises(InconsistentSnapshotError, match="cluster"):
            publish()
    with pytest.raises(InconsistentSnapshotError, match="cluster"):
        await cache.publish_and_wait(G, broken, timeout=0.05)
    assert cache.snapshot(G) is snap  # nothing published


async def test_dropping_clusters_publishes_a_bridge_first_and_stops_if_it_fails():
    cache = SnapshotCache()
    old = with_retired_cluster(snapshot(0))
    cache.set_snapshot(G, old)
    new = snapshot(10)
    dropped = old.names(t.CLUSTER) - new.names(t.CLUSTER)
    assert dropped
    started = time.monotonic()
    result = await cache.publish_and_wait(G, new, timeout=0.2, min_proxies=1)
    assert time.monotonic() - started < 2.0
    bridge = cache.snapshot(G)
    assert bridge is not new  # the bridge was not answered: the new snapshot waits
    assert bridge.names(t.CLUSTER) == old.names(t.CLUSTER) | new.names(t.CLUSTER)
    assert bridge.version(t.ROUTE) == new.version(t.ROUTE)  # the new routes, old clusters
    assert result.versions == bridge.versions and not result.converged
    assert [o.detail for o in result.outcomes] == ["fewer than 1 proxies connected"]


async def test_a_bridge_answered_is_followed_by_the_new_snapshot():
    cache = SnapshotCache()
    cache.set_snapshot(G, with_retired_cluster(snapshot(0)))
    (handle,) = streams(cache, 1)
    new = snapshot(10)

    async def proxy() -> None:
        seen = set()
        while len(seen) < 2:
            current = cache.snapshot(G)
            if id(current) not in seen and cache._groups[G].publications:
                seen.add(id(current))
                answer(cache, handle, current)
            await asyncio.sleep(0.01)

    helper = asyncio.create_task(proxy())
    result = await cache.publish_and_wait(G, new, timeout=2)
    await asyncio.wait_for(helper, 2)
    assert cache.snapshot(G) is new and result.converged
    assert result.versions == new.versions


def test_counts_of_a_group_without_a_snapshot():
    cache = SnapshotCache()
    streams(cache, 2)
    assert cache.sync_counts(G, t.CLUSTER) == ("", 2, 0)
    assert cache.sync_counts("nobody", t.CLUSTER) == ("", 0, 0)


async def test_a_proxy_leaving_during_a_push_is_disconnected_not_waited_for():
    cache = SnapshotCache()
    a, b = streams(cache, 2)
    snap = snapshot(10)
    publication = cache.publish(G, snap)
    answer(cache, a, snap)
    cache.close_stream(b)
    assert publication.done.is_set()
    result = await cache.wait(publication, timeout=1)
    assert [(o.node_id, o.outcome, o.detail) for o in result.outcomes] == [
        ("envoy-0", "acked", ""), ("envoy-1", "disconnected", "")]
    assert cache.sync_counts(G, t.CLUSTER)[1] == 1
    cache.close_stream(b)  # closing twice, or after answering, changes nothing
    cache.close_stream(a)
    assert cache.sync_counts(G, t.CLUSTER)[1] == 0


def test_a_closed_stream_is_no_longer_told_of_changes():
    cache = SnapshotCache()
    a, b = streams(cache, 2)
    told: list[str] = []
    cache.watch(a, lambda: told.append("a"))
    cache.watch(b, lambda: told.append("b"))
    cache.set_snapshot(G, snapshot(0))
    cache.close_stream(a)
    cache.set_snapshot(G, snapshot(10))
    assert told == ["a", "b", "b"]


def test_a_proxy_claiming_no_group_is_shown_in_the_group_it_got():
    cache = SnapshotCache()
    cache.open_stream("envoy-x", G)
    cache.open_stream("envoy-y", G, claimed="payments")
    proxies = cache.status(G)["proxies"]
    assert [p["claimed_group"] for p in proxies] == [G, "payments"]


async def test_the_wait_options_reach_the_publication():
    cache = SnapshotCache()
    handles = streams(cache, 4)
    snap = snapshot(10)

    async def half() -> None:
        while not cache._groups[G].publications:
            await asyncio.sleep(0.005)
        for handle in handles[:2]:
            answer(cache, handle, snap)

    helper = asyncio.create_task(half())
    started = time.monotonic()
    result = await cache.publish_and_wait(G, snap, timeout=5, quorum=0.5, early=True)
    await helper
    assert time.monotonic() - started < 4  # ended on the quorum, not the timeout
    assert result.quorum == 0.5 and result.converged and result.acked == 2


async def test_an_empty_fleet_reports_how_long_it_waited():
    cache = SnapshotCache()
    result = await cache.publish_and_wait(G, snapshot(10), timeout=1)
    assert result.outcomes == () and result.converged
    assert isinstance(result.seconds, float) and 0 <= result.seconds < 1


def test_an_unchecked_publication_is_taken_as_given():
    """Tests make Envoy NACK with a snapshot the consistency check would refuse."""
    cache = SnapshotCache()
    broken = Snapshot.build(listeners=snapshot(0).resources(t.LISTENER).values(),
                            routes=snapshot(0).resources(t.ROUTE).values(), clusters=[],
                            endpoints=[])
    cache.publish(G, broken, verify=False)
    assert cache.snapshot(G) is broken


def test_nacks_are_counted_logged_and_remembered(caplog):
    import logging

    clock = iter([100.0, 101.0, 102.0, 103.0])
    cache = SnapshotCache(clock=lambda: next(clock))
    (handle,) = streams(cache, 1)
    with caplog.at_level(logging.WARNING, logger="turnout.xds.cache"):
        cache.nacked(handle, t.CLUSTER, "v7", "unknown cluster type")
        cache.nacked(handle, t.CLUSTER, "v8", "still bad")
        cache.nacked(handle, "type.googleapis.com/x.Y", "v1", "odd")
    assert cache.nacks == {t.CLUSTER: 2, "type.googleapis.com/x.Y": 1}
    assert {r.name for r in caplog.records} == {"turnout.xds.cache"}
    assert caplog.messages[0] == ("NACK from node envoy-0 (group fleet) for cds version v7: "
                                  "unknown cluster type")
    assert caplog.messages[2].startswith("NACK from node envoy-0 (group fleet) for "
                                         "type.googleapis.com/x.Y version v1: odd")
    last = cache.status(G)["last_nack"]
    assert last == {"node": "envoy-0", "type": "type.googleapis.com/x.Y", "version": "v1",
                    "message": "odd", "at": 103.0}
    assert cache.status(G)["versions"] == {}  # nothing published yet


async def test_several_rejections_are_all_named():
    cache = SnapshotCache()
    (handle,) = streams(cache, 1)
    snap = snapshot(10)
    publication = cache.publish(G, snap)
    for type_url in sorted(t.ALL_TYPES):
        if type_url in (t.CLUSTER, t.LISTENER):
            cache.nacked(handle, type_url, snap.version(type_url), f"bad {type_url[-8:]}")
        else:
            cache.acked(handle, type_url, snap.version(type_url))
    result = await cache.wait(publication, timeout=1)
    assert result.outcomes[0].outcome == "nacked"
    assert sorted(result.outcomes[0].detail.split("; ")) == sorted(
        [f"bad {t.CLUSTER[-8:]}", f"bad {t.LISTENER[-8:]}"])


async def test_a_proxy_not_expected_is_served_but_never_waited_for():
    """docs/servers.md, "expected_proxies": a stream whose node is not expected gets the
    snapshot like any other, is shown as not awaited, and neither holds a push up nor
    counts towards the minimum fleet."""
    cache = SnapshotCache()
    cache.expects = lambda node: node.startswith("envoy-")
    cache.set_snapshot(G, snapshot(0))
    [envoy] = streams(cache, 1)
    stranger = cache.open_stream("sidecar-7", G)
    for type_url in t.ALL_TYPES:
        cache.subscribed(stranger, type_url)
    assert (envoy.awaited, stranger.awaited) == (True, False)
    snap = snapshot(11)
    publication = cache.publish(G, snap)
    assert set(publication.pending) == {envoy.stream_id}
    answer(cache, envoy, snap)
    assert publication.done.is_set()  # the stranger never answered
    result = await cache.wait(publication, timeout=1.0)
    assert result.converged and [o.node_id for o in result.outcomes] == ["envoy-0"]
    proxies = {p["node"]: p["awaited"] for p in cache.status(G)["proxies"]}
    assert proxies == {"envoy-0": True, "sidecar-7": False}
    # A minimum fleet is made of expected proxies only.
    waiting = cache.publish(G, snapshot(12), min_proxies=2)
    late = cache.open_stream("sidecar-8", G)
    assert late.stream_id not in waiting.pending
    second = cache.open_stream("envoy-1", G)
    assert second.stream_id in waiting.pending


def test_without_a_rule_every_proxy_is_awaited():
    cache = SnapshotCache()
    assert cache.open_stream("anyone", G).awaited is True
