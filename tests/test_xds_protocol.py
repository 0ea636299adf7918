"""ADS protocol rules, over real gRPC on loopback against an in-process server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2

from tests.xds_fakes import GROUP, snapshot
from xds_server import type_urls as t


async def _names(response, message_type) -> list[str]:
    out = []
    for any_msg in response.resources:
        msg = message_type()
        any_msg.Unpack(msg)
        out.append(getattr(msg, "name", "") or getattr(msg, "cluster_name", ""))
    return sorted(out)


async def test_wildcard_cds_returns_full_set_with_version_and_nonce(harness):
    envoy = harness.client()
    await envoy.request(t.CLUSTER)
    response = await envoy.response()
    assert response.type_url == t.CLUSTER
    assert response.version_info == harness.cache.snapshot(GROUP).version(t.CLUSTER)
    assert response.nonce
    assert await _names(response, cluster_pb2.Cluster) == [
        "slot_blue", "slot_blue_ha", "slot_blue_http", "slot_blue_http_ha",
        "slot_blue_http_preview", "slot_blue_preview",
        "slot_green", "slot_green_ha", "slot_green_http", "slot_green_http_ha",
        "slot_green_http_preview", "slot_green_preview"]
    await envoy.close()


async def test_ack_is_recorded_and_nothing_is_resent(harness):
    envoy = harness.client()
    await envoy.request(t.CLUSTER)
    response = await envoy.response()
    await envoy.ack(response)
    assert await envoy.no_response()
    proxies = harness.cache.status(GROUP)["proxies"]
    assert proxies[0]["acked"]["cds"] == response.version_info
    await envoy.close()


async def test_nonces_are_per_stream_and_stale_nonces_ignored(harness):
    first, second = harness.client("a"), harness.client("b")
    await first.request(t.CLUSTER)
    await second.request(t.CLUSTER)
    r1, r2 = await first.response(), await second.response()
    assert r1.nonce == r2.nonce == "1"  # each stream counts its own
    # A request answering a nonce this stream never sent is stale: no ACK is recorded.
    await first.request(t.CLUSTER, version=r1.version_info, nonce="999")
    assert await first.no_response()
    by_node = {p["node"]: p for p in harness.cache.status(GROUP)["proxies"]}
    assert "cds" not in by_node["a"]["acked"]
    await first.ack(r1)
    await asyncio.sleep(0.05)
    by_node = {p["node"]: p for p in harness.cache.status(GROUP)["proxies"]}
    assert by_node["a"]["acked"]["cds"] == r1.version_info
    await first.close()
    await second.close()


async def test_nack_is_held_not_resent_and_reported_with_node(harness):
    envoy = harness.client("edge-7")
    await envoy.request(t.ROUTE, names=("ingress_routes",))
    response = await envoy.response()
    await envoy.request(
        t.ROUTE, names=("ingress_routes",), version="", nonce=response.nonce,
        error="route: unknown cluster 'slot_purple'",
    )
    assert await envoy.no_response(0.5), "a NACKed version must not be resent"
    nack = harness.cache.status(GROUP)["last_nack"]
    assert nack["node"] == "edge-7"
    assert nack["type"] == "rds"
    assert nack["version"] == response.version_info
    assert "slot_purple" in nack["message"]
    # A new version is sent as soon as there is one.
    harness.cache.set_snapshot(GROUP, snapshot(10))
    fresh = await envoy.response()
    assert fresh.version_info != response.version_info
    assert fresh.nonce != response.nonce
    await envoy.close()


async def test_rds_and_eds_answer_requested_names_and_new_names_even_if_unchanged(harness):
    envoy = harness.client()
    await envoy.request(t.ENDPOINT, names=("slot_blue",))
    response = await envoy.response()
    assert await _names(response, endpoint_pb2.ClusterLoadAssignment) == ["slot_blue"]
    await envoy.ack(response, names=("slot_blue",))
    assert await envoy.no_response()
    await envoy.request(t.ENDPOINT, names=("slot_blue", "slot_green"),
                        version=response.version_info, nonce=response.nonce)
    widened = await envoy.response()
    assert widened.version_info == response.version_info  # same version, new names
    assert await _names(widened, endpoint_pb2.ClusterLoadAssignment) == [
        "slot_blue", "slot_green",
    ]
    await envoy.close()


async def test_reconnect_with_current_version_gets_no_push_and_counts_as_acked(harness):
    current = harness.cache.snapshot(GROUP).version(t.CLUSTER)
    envoy = harness.client("back-again")
    await envoy.request(t.CLUSTER, version=current)
    assert await envoy.no_response()
    proxy = harness.cache.status(GROUP)["proxies"][0]
    assert proxy["acked"]["cds"] == current
    await envoy.close()


async def test_reconnect_with_prior_version_gets_current(harness):
    old = harness.cache.snapshot(GROUP).version(t.ROUTE)
    harness.cache.set_snapshot(GROUP, snapshot(50))
    envoy = harness.client()
    await envoy.request(t.ROUTE, names=("ingress_routes",), version=old)
    response = await envoy.response()
    assert response.version_info == harness.cache.snapshot(GROUP).version(t.ROUTE)
    assert response.version_info != old
    await envoy.close()


async def test_node_is_kept_for_the_stream(harness):
    envoy = harness.client("keeper")
    await envoy.request(t.CLUSTER)
    response = await envoy.response()
    await envoy.request(t.CLUSTER, version=response.version_info, nonce=response.nonce,
                        with_node=False)
    await asyncio.sleep(0.05)
    proxy = harness.cache.status(GROUP)["proxies"][0]
    assert proxy["node"] == "keeper"
    assert proxy["acked"]["cds"] == response.version_info
    await envoy.close()


async def test_first_request_without_node_is_refused(harness):
    envoy = harness.client()
    await envoy.request(t.CLUSTER, with_node=False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await envoy.call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the first request must carry node.id" in (info.value.details() or "")
    assert harness.cache.status(GROUP)["proxies"] == []
    await envoy.close()


async def _subscribe_all(envoy) -> dict[str, object]:
    """Subscribe to all four types and ACK everything; returns the last responses."""
    await envoy.request(t.CLUSTER)
    await envoy.request(t.ENDPOINT, names=("slot_blue", "slot_green"))
    await envoy.request(t.LISTENER)
    await envoy.request(t.ROUTE, names=("ingress_routes",))
    seen = {}
    for _ in range(4):
        r = await envoy.response()
        seen[r.type_url] = r
        names = {t.ENDPOINT: ("slot_blue", "slot_green"), t.ROUTE: ("ingress_routes",)}
        await envoy.ack(r, names=names.get(r.type_url, ()))
    return seen


async def test_push_order_clusters_endpoints_then_listeners_and_routes(harness):
    envoy = harness.client()
    await _subscribe_all(envoy)
    assert await envoy.no_response()
    # A change to every type: a new ingress port touches LDS; endpoint health EDS; the
    # weights RDS; and a renamed cluster set CDS (simulate with a different snapshot).
    from tests.xds_fakes import BLUE, GREEN
    from triton_slots.slot import Slot
    from turnout.topology import build_snapshot
    from turnout.weights import Weights
    changed = build_snapshot(
        ingress_host="127.0.0.1", ingress_port=9090,
        slots={"blue": Slot("blue", (BLUE,)), "green": Slot("green", (GREEN,))},
        health={BLUE: True, GREEN: False}, weights=Weights.with_green(30),
    )
    harness.cache.set_snapshot(GROUP, changed)
    first = await envoy.response()
    assert first.type_url == t.ENDPOINT  # CDS unchanged; EDS goes first
    # Listeners and routes wait until the endpoints are answered.
    assert await envoy.no_response(0.3)
    await envoy.ack(first, names=("slot_blue", "slot_green"))
    second, third = await envoy.response(), await envoy.response()
    assert [second.type_url, third.type_url] == [t.LISTENER, t.ROUTE]
    await envoy.close()


async def test_weight_change_is_rds_only():
    before, after = snapshot(10).versions, snapshot(25).versions
    assert {k for k in before if before[k] != after[k]} == {"rds"}


async def test_publish_and_wait_reports_acks_and_nacks(harness):
    good, bad = harness.client("good"), harness.client("bad")
    for envoy in (good, bad):
        await _subscribe_all(envoy)

    async def answer(envoy, reject: bool) -> None:
        response = await envoy.response()
        if reject:
            await envoy.request(t.ROUTE, names=("ingress_routes",), nonce=response.nonce,
                                error="rejected for the test")
        else:
            await envoy.ack(response, names=("ingress_routes",))

    publish = asyncio.ensure_future(harness.cache.publish_and_wait(GROUP, snapshot(40)))
    await asyncio.gather(answer(good, False), answer(bad, True))
    result = await publish
    outcomes = {o.node_id: o.outcome for o in result.outcomes}
    assert outcomes == {"good": "acked", "bad": "nacked"}
    assert not result.converged
    assert result.seconds > 0
    for envoy in (good, bad):
        await envoy.close()


async def test_publish_and_wait_times_out_on_a_silent_proxy(harness):
    envoy = harness.client("silent")
    await _subscribe_all(envoy)
    result = await harness.cache.publish_and_wait(GROUP, snapshot(60), timeout=0.3)
    assert [o.outcome for o in result.outcomes] == ["timeout"]
    assert "rds" in result.outcomes[0].detail
    await envoy.close()


async def test_dropping_a_cluster_publishes_routes_first(harness):
    envoy = harness.client()
    await _subscribe_all(envoy)
    current = harness.cache.snapshot(GROUP)
    from turnout.topology import split_routes
    from xds_server import Snapshot
    routes_blue_only = split_routes("ingress_routes", clusters={"blue": "slot_blue"},
                                    weights={"blue": 100})
    final = Snapshot.build(
        listeners=current.resources(t.LISTENER).values(),
        routes=[routes_blue_only],
        clusters=[current.resources(t.CLUSTER)["slot_blue"]],
        endpoints=[current.resources(t.ENDPOINT)["slot_blue"]],
    )
    publish = asyncio.ensure_future(harness.cache.publish_and_wait(GROUP, final))
    order = []
    for _ in range(3):
        r = await envoy.response()
        order.append(r.type_url)
        if r.type_url == t.ROUTE:
            table = route_pb2.RouteConfiguration()
            r.resources[0].Unpack(table)
            assert "slot_green" not in str(table)
            await envoy.ack(r, names=("ingress_routes",))
        elif r.type_url == t.CLUSTER:
            assert await _names(r, cluster_pb2.Cluster) == ["slot_blue"]
            await envoy.ack(r)
        else:
            await envoy.ack(r, names=("slot_blue",))
    # Routes stop naming the cluster (and are ACKed) before the cluster is removed.
    assert order == [t.ROUTE, t.CLUSTER, t.ENDPOINT]
    result = await publish
    assert result.converged
    await envoy.close()


async def test_publish_waits_for_a_proxy_when_none_is_connected(harness):
    publish = asyncio.ensure_future(
        harness.cache.publish_and_wait(GROUP, snapshot(70), timeout=5.0, min_proxies=1))
    await asyncio.sleep(0.2)
    assert not publish.done(), "an empty fleet must not count as converged"
    envoy = harness.client("late")
    await _subscribe_all(envoy)
    result = await publish
    assert result.converged and [o.node_id for o in result.outcomes] == ["late"]
    await envoy.close()


async def test_publish_to_an_empty_fleet_times_out_not_converged(harness):
    result = await harness.cache.publish_and_wait(GROUP, snapshot(80), timeout=0.2,
                                                  min_proxies=1)
    assert not result.converged
    assert "fewer than 1 proxies" in result.outcomes[0].detail
