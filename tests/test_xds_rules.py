"""xDS rules that keep every client correct (issue: faults): endpoints re-sent after a
cluster change, re-requested names answered, the reconnect shortcut only for wildcard
types, a NACKed CDS holding LDS/RDS back, unknown node groups served the default, bounded
memos and groups freed."""

from __future__ import annotations

import asyncio

from tests.xds_fakes import GROUP, snapshot
from xds_server import type_urls as t
from xds_server.snapshot import MAX_MEMOS

BLUE, GREEN = "slot_blue", "slot_green"




def _other_clusters(green: int):
    """A snapshot whose CDS differs (a renamed listener port would only touch LDS)."""
    from tests.xds_fakes import BLUE as B
    from tests.xds_fakes import GREEN as G
    from triton_slots.slot import Slot
    from turnout.topology import build_snapshot
    from turnout.weights import Weights
    from xds_server.resources import Resilience

    return build_snapshot(ingress_host="127.0.0.1", ingress_port=8080,
                          slots={"blue": Slot("blue", (B,)), "green": Slot("green", (G,))},
                          health={B: True, G: True}, weights=Weights.with_green(green),
                          resilience=Resilience(interval_s=0.75))


async def _subscribe(envoy, type_url, names=()):
    await envoy.request(type_url, names=names)
    response = await envoy.response()
    await envoy.ack(response, names)
    return response


async def test_endpoints_are_resent_after_a_cluster_change(harness):
    envoy = harness.client()
    await _subscribe(envoy, t.CLUSTER)
    eds = await _subscribe(envoy, t.ENDPOINT, (BLUE, GREEN))
    changed = _other_clusters(0)
    assert changed.version(t.ENDPOINT) == eds.version_info  # endpoints unchanged
    harness.cache.set_snapshot(GROUP, changed)
    cds = await envoy.response()
    assert cds.type_url == t.CLUSTER
    await envoy.ack(cds)
    again = await envoy.response()
    assert again.type_url == t.ENDPOINT and again.version_info == eds.version_info
    await envoy.close()


async def test_a_dropped_name_requested_again_is_answered(harness):
    envoy = harness.client()
    both = await _subscribe(envoy, t.ENDPOINT, (BLUE, GREEN))
    await envoy.request(t.ENDPOINT, names=(BLUE,), version=both.version_info)
    assert await envoy.no_response()  # fewer names: nothing new to send
    await envoy.request(t.ENDPOINT, names=(BLUE, GREEN), version=both.version_info)
    again = await envoy.response()
    assert again.version_info == both.version_info and len(again.resources) == 2
    await envoy.close()


async def test_reconnect_shortcut_only_for_wildcard_types(harness):
    current = harness.cache.snapshot(GROUP)
    envoy = harness.client()
    await envoy.request(t.CLUSTER, version=current.version(t.CLUSTER))
    assert await envoy.no_response()  # CDS: it holds the full set already
    await envoy.request(t.ENDPOINT, names=(BLUE,), version=current.version(t.ENDPOINT))
    answered = await envoy.response()  # EDS: which names it holds is unknown: answer
    assert answered.type_url == t.ENDPOINT and len(answered.resources) == 1
    await envoy.close()


async def test_nacked_clusters_hold_listeners_and_routes(harness):
    envoy = harness.client()
    await envoy.request(t.CLUSTER)
    cds = await envoy.response()
    await envoy.request(t.LISTENER)
    await envoy.request(t.CLUSTER, version="", nonce=cds.nonce, error="bad cluster")
    assert await envoy.no_response(0.4)  # no LDS while the current CDS is rejected
    harness.cache.set_snapshot(GROUP, _other_clusters(0))
    fixed = await envoy.response()
    assert fixed.type_url == t.CLUSTER
    await envoy.ack(fixed)
    lds = await envoy.response()
    assert lds.type_url == t.LISTENER
    await envoy.close()


async def test_unknown_node_group_gets_the_default_and_shows_in_status(harness):
    envoy = harness.client("sidecar-1", cluster="payments-service")
    cds = await _subscribe(envoy, t.CLUSTER)
    assert cds.version_info == harness.cache.snapshot(GROUP).version(t.CLUSTER)
    proxies = harness.cache.status(GROUP)["proxies"]
    assert [(p["node"], p["claimed_group"]) for p in proxies] == [
        ("sidecar-1", "payments-service")]
    assert harness.cache.groups() == [GROUP]  # no empty group was created
    await envoy.close()


async def test_groups_without_configuration_are_freed(harness):
    handle = harness.cache.open_stream("n", "scratch")
    assert "scratch" in harness.cache.groups()
    harness.cache.close_stream(handle)
    assert "scratch" not in harness.cache.groups()
    harness.cache.close_stream(handle)  # twice is harmless


def test_response_memos_are_bounded():
    snap = snapshot(0)
    for i in range(MAX_MEMOS + 50):
        snap.encode(t.ENDPOINT, frozenset({BLUE, f"unknown-{i}"}))
    assert len(snap._encoded) <= MAX_MEMOS
    assert snap.encode(t.ENDPOINT, frozenset({BLUE}))  # still answers


async def test_a_flooding_stream_does_not_starve_others(harness):
    flood, quiet = harness.client("flood"), harness.client("quiet")
    await flood.request(t.CLUSTER)
    for _ in range(500):
        await flood.request(t.CLUSTER, nonce="stale")
    await quiet.request(t.CLUSTER)
    response = await asyncio.wait_for(quiet.response(), 2.0)
    assert response.type_url == t.CLUSTER
    await flood.close()
    await quiet.close()


async def _answer(envoy, count: int) -> None:
    names = {t.ENDPOINT: (BLUE, GREEN), t.ROUTE: ("ingress_routes",)}
    for _ in range(count):
        r = await envoy.response()
        await envoy.ack(r, names.get(r.type_url, ()))


async def test_a_push_is_not_voided_by_a_newer_one(harness):
    from tests.test_xds_protocol import _subscribe_all

    envoy = harness.client()
    await _subscribe_all(envoy)
    first = harness.cache.publish(GROUP, snapshot(30))
    second = harness.cache.publish(GROUP, snapshot(30, green_healthy=False))  # health push
    await _answer(envoy, 2)  # the routes and the endpoints
    one, two = await harness.cache.wait(first, 2.0), await harness.cache.wait(second, 2.0)
    assert one.converged and two.converged
    assert one.versions == two.versions  # both answered by the newest configuration
    await envoy.close()


async def test_quorum_and_early_completion(harness):
    from tests.test_xds_protocol import _subscribe_all

    quick, silent = harness.client("quick"), harness.client("silent")
    await _subscribe_all(quick)
    await _subscribe_all(silent)
    publication = harness.cache.publish(GROUP, snapshot(50), quorum=0.5, early=True)
    await _answer(quick, 1)
    started = asyncio.get_running_loop().time()
    result = await harness.cache.wait(publication, 5.0)
    assert asyncio.get_running_loop().time() - started < 1.0  # did not wait for "silent"
    assert result.converged and [o.node_id for o in result.stragglers] == ["silent"]
    strict = await harness.cache.publish_and_wait(GROUP, snapshot(60), timeout=0.3)
    assert not strict.converged  # 100 %: the silent proxy holds it
    await quick.close()
    await silent.close()


async def test_answers_for_older_versions_do_not_settle_a_newer_push():
    from xds_server import SnapshotCache

    cache = SnapshotCache()
    old, new = snapshot(10), snapshot(20)
    cache.set_snapshot(GROUP, old)
    handle = cache.open_stream("n", GROUP)
    for type_url in t.ALL_TYPES:
        cache.subscribed(handle, type_url)
        cache.acked(handle, type_url, old.version(type_url))
    publication = cache.publish(GROUP, new)
    cache.acked(handle, t.ROUTE, old.version(t.ROUTE))  # a late ACK of the old routes
    cache.nacked(handle, t.ROUTE, old.version(t.ROUTE), "late NACK of the old routes")
    assert not publication.done.is_set() and handle.stream_id in publication.pending
    cache.acked(handle, t.ROUTE, new.version(t.ROUTE))
    result = await cache.wait(publication, 1.0)
    assert result.converged and result.outcomes[0].outcome == "acked"
    newest = snapshot(30)
    publication = cache.publish(GROUP, newest)
    cache.nacked(handle, t.ROUTE, newest.version(t.ROUTE), "now rejected")
    nacked = await cache.wait(publication, 1.0)
    assert not nacked.converged and nacked.outcomes[0].outcome == "nacked"
    assert "now rejected" in nacked.outcomes[0].detail


async def test_unsupported_types_are_ignored_and_streams_leave_no_trace(harness):
    envoy = harness.client("n1")
    await envoy.request("type.googleapis.com/envoy.config.core.v3.NotAType")
    assert await envoy.no_response(0.2)
    await _subscribe(envoy, t.CLUSTER)  # the stream still works
    assert [p["node"] for p in harness.cache.status(GROUP)["proxies"]] == ["n1"]
    await envoy.close()
    for _ in range(50):
        if not harness.cache.status(GROUP)["proxies"]:
            break
        await asyncio.sleep(0.02)
    assert harness.cache.status(GROUP)["proxies"] == []
    assert harness.ads.sends_by_type[t.CLUSTER] == 1


async def test_status_reports_each_proxy_and_the_last_nack(harness):
    from tests.test_xds_protocol import _subscribe_all

    envoy = harness.client("edge-1", cluster="payments")
    seen = await _subscribe_all(envoy)
    for _ in range(100):  # the last ACK is on its way
        status = harness.cache.status(GROUP)
        if status["proxies"] and status["proxies"][0]["in_sync"]:
            break
        await asyncio.sleep(0.01)
    current = harness.cache.snapshot(GROUP)
    [proxy] = status["proxies"]
    assert status["group"] == GROUP and status["versions"] == current.versions
    assert proxy["node"] == "edge-1" and proxy["claimed_group"] == "payments"
    assert proxy["in_sync"] is True and proxy["stream"] >= 1 and proxy["connected_at"] > 0
    assert proxy["acked"] == {"cds": current.version(t.CLUSTER),
                              "eds": current.version(t.ENDPOINT),
                              "lds": current.version(t.LISTENER),
                              "rds": current.version(t.ROUTE)}
    assert status["last_nack"] is None
    harness.cache.set_snapshot(GROUP, snapshot(40))
    routes = await envoy.response()
    await envoy.request(t.ROUTE, names=("ingress_routes",),
                        version=seen[t.ROUTE].version_info, nonce=routes.nonce,
                        error="unknown cluster")
    await asyncio.sleep(0.05)
    status = harness.cache.status(GROUP)
    assert status["proxies"][0]["in_sync"] is False
    nack = status["last_nack"]
    assert (nack["node"], nack["type"], nack["version"], nack["message"]) == (
        "edge-1", "rds", routes.version_info, "unknown cluster")
    await envoy.close()


async def test_sync_counts_count_streams_holding_the_whole_snapshot(harness):
    from tests.test_xds_protocol import _subscribe_all

    calls = []
    harness.cache.on_streams_changed = lambda: calls.append(1)
    assert harness.cache.sync_counts("nobody", t.ROUTE) == ("", 0, 0)
    synced, partial = harness.client("synced"), harness.client("partial")
    await _subscribe_all(synced)
    await partial.request(t.CLUSTER)  # connected, not subscribed to everything
    await partial.response()
    await asyncio.sleep(0.1)
    version = harness.cache.snapshot(GROUP).version(t.ROUTE)
    assert harness.cache.sync_counts(GROUP, t.ROUTE) == (version, 2, 1)
    harness.cache.set_snapshot(GROUP, snapshot(40))  # a new route version, not yet ACKed
    assert harness.cache.sync_counts(GROUP, t.ROUTE) == (
        harness.cache.snapshot(GROUP).version(t.ROUTE), 2, 0)
    await partial.close()
    for _ in range(100):
        if len(calls) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(calls) == 3  # two opened, one closed
    await synced.close()


async def test_star_asks_for_every_listener_like_no_names(harness):
    from tests.test_xds_delta import _grpc_snapshot

    harness.cache.set_snapshot(GROUP, _grpc_snapshot())
    sotw = harness.client("star")
    await sotw.request(t.LISTENER, names=("*",))
    response = await sotw.response()
    from envoy.config.listener.v3 import listener_pb2

    names = []
    for packed in response.resources:
        listener = listener_pb2.Listener()
        packed.Unpack(listener)
        names.append(listener.name)
    assert names == ["ingress"]  # the wildcard set: not the API listener
    await sotw.close()
    delta = harness.delta_client("star-delta")
    await delta.request(t.LISTENER, subscribe=("*",))
    assert sorted(r.name for r in (await delta.response()).resources) == ["ingress"]
    await delta.close()


def _listener_names(response) -> list[str]:
    from envoy.config.listener.v3 import listener_pb2

    names = []
    for packed in response.resources:
        listener = listener_pb2.Listener()
        packed.Unpack(listener)
        names.append(listener.name)
    return names


async def test_a_named_listener_subscription_gets_that_listener_even_on_reconnect(harness):
    """gRPC's xDS client names its listener: it gets that one (not Envoy's wildcard set),
    and a reconnect naming a version it held is answered (the shortcut is for wildcard
    subscriptions only: which names it holds is unknown)."""
    from tests.test_xds_delta import _grpc_snapshot

    snap = _grpc_snapshot()
    harness.cache.set_snapshot(GROUP, snap)
    first = harness.client("grpc-1")
    await first.request(t.LISTENER, names=("turnout",))
    assert _listener_names(await first.response()) == ["turnout"]
    await first.close()
    again = harness.client("grpc-2")
    await again.request(t.LISTENER, names=("turnout",), version=snap.version(t.LISTENER))
    assert _listener_names(await again.response()) == ["turnout"]
    # Not taken as held: the fleet view waits for this client's ACK of what it was sent.
    (proxy,) = [p for p in harness.cache.status(GROUP)["proxies"] if p["node"] == "grpc-2"]
    assert "lds" not in proxy["acked"]
    await again.close()


async def test_state_of_the_world_sends_are_counted_one_per_response(harness):
    envoy = harness.client()
    await _subscribe(envoy, t.CLUSTER)
    await _subscribe(envoy, t.ENDPOINT, (BLUE, GREEN))
    harness.cache.set_snapshot(GROUP, _other_clusters(0))
    await envoy.ack(await envoy.response())  # clusters changed
    await envoy.ack(await envoy.response())  # their endpoints, sent again
    assert harness.ads.sends_by_type == {t.CLUSTER: 2, t.ENDPOINT: 2, t.ROUTE: 0,
                                         t.LISTENER: 0}
    await envoy.close()


async def test_names_the_snapshot_does_not_have_get_no_answer(harness):
    envoy = harness.client()
    await envoy.request(t.ENDPOINT, names=("slot_nowhere",))
    assert await envoy.no_response()
    await envoy.request(t.ENDPOINT, names=("slot_nowhere", BLUE))
    answered = await envoy.response()
    assert len(answered.resources) == 1
    await envoy.close()
