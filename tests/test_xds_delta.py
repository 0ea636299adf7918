"""Incremental (delta) ADS rules, over real gRPC on loopback against an in-process server
sharing its cache with the state-of-the-world server."""

from __future__ import annotations

import asyncio

from tests.xds_fakes import GROUP, snapshot
from turnout.topology import ROUTE_NAME
from xds_server import Snapshot
from xds_server import type_urls as t


async def _in_sync(harness, node: str):
    """A delta client subscribed to every type, holding the current snapshot."""
    envoy = harness.delta_client(node)
    current = harness.cache.snapshot(GROUP)
    for type_url, names in ((t.CLUSTER, ()), (t.ENDPOINT, tuple(current.names(t.ENDPOINT))),
                            (t.LISTENER, ()), (t.ROUTE, (ROUTE_NAME,))):
        await envoy.request(type_url, subscribe=names)
        await envoy.ack(await envoy.response())
    return envoy


def _without_routes(current: Snapshot) -> Snapshot:
    """``current`` with its listeners and route tables gone (clusters and endpoints kept)."""
    return Snapshot.build(listeners=(), routes=(),
                          clusters=current.resources(t.CLUSTER).values(),
                          endpoints=current.resources(t.ENDPOINT).values())


def _names(response) -> list[str]:
    return sorted(r.name for r in response.resources)


async def test_wildcard_cds_sends_every_cluster_with_per_resource_versions(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER)
    response = await envoy.response()
    current = harness.cache.snapshot(GROUP)
    assert response.type_url == t.CLUSTER and response.nonce
    assert response.system_version_info == current.version(t.CLUSTER)
    assert _names(response) == sorted(current.names(t.CLUSTER))
    versions = current.resource_versions(t.CLUSTER)
    assert {r.name: r.version for r in response.resources} == dict(versions)
    assert len(set(versions.values())) == len(versions)  # a version per resource
    assert not response.removed_resources
    await envoy.close()


async def test_ack_counts_and_an_unchanged_type_is_not_resent(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER)
    await envoy.ack(await envoy.response())
    assert await envoy.no_response()
    proxy = harness.cache.status(GROUP)["proxies"][0]
    assert proxy["acked"]["cds"] == harness.cache.snapshot(GROUP).version(t.CLUSTER)
    # A weight change is RDS-only: the CDS subscriber gets nothing.
    harness.cache.set_snapshot(GROUP, snapshot(30))
    assert await envoy.no_response()
    await envoy.close()


async def test_only_changed_resources_are_sent_and_gone_ones_removed(harness):
    envoy = harness.delta_client()
    await envoy.request(t.ROUTE, subscribe=(ROUTE_NAME,))
    first = await envoy.response()
    assert _names(first) == [ROUTE_NAME]
    await envoy.ack(first)
    harness.cache.set_snapshot(GROUP, snapshot(40))
    second = await envoy.response()
    assert _names(second) == [ROUTE_NAME]
    assert second.resources[0].version != first.resources[0].version
    await envoy.ack(second)
    # The route table disappears from the snapshot: it is removed, not silently kept.
    harness.cache.set_snapshot(GROUP, _without_routes(harness.cache.snapshot(GROUP)),
                               verify=False)
    third = await envoy.response()
    assert not third.resources and list(third.removed_resources) == [ROUTE_NAME]
    await envoy.close()


async def test_subscribe_and_unsubscribe_named_endpoints(harness):
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    first = await envoy.response()
    assert _names(first) == ["slot_blue"]
    await envoy.ack(first)
    await envoy.request(t.ENDPOINT, subscribe=("slot_green",))
    second = await envoy.response()
    assert _names(second) == ["slot_green"]  # only the new name, not slot_blue again
    await envoy.ack(second)
    await envoy.request(t.ENDPOINT, unsubscribe=("slot_blue",))
    assert await envoy.no_response()  # forgetting needs no answer
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    third = await envoy.response()  # asked again after forgetting: sent again
    assert _names(third) == ["slot_blue"]
    await envoy.close()


async def test_stale_nonce_still_changes_the_subscription(harness):
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    first = await envoy.response()
    await envoy.ack(first)
    await envoy.request(t.ENDPOINT, subscribe=("slot_green",), nonce="not-a-nonce")
    response = await envoy.response()
    assert _names(response) == ["slot_green"]
    # ...but a stale nonce is no ACK: the green response is still outstanding.
    await envoy.request(t.ENDPOINT, nonce=first.nonce)
    harness.cache.set_snapshot(GROUP, snapshot(0, green_healthy=False))
    assert await envoy.no_response()  # one response per type outstanding
    await envoy.ack(response)
    assert _names(await envoy.response()) == ["slot_green"]
    await envoy.close()


async def test_nack_is_held_reported_and_restores_what_the_client_holds(harness):
    envoy = harness.delta_client("node-n")
    await envoy.request(t.ROUTE, subscribe=(ROUTE_NAME,))
    good = await envoy.response()
    await envoy.ack(good)
    harness.cache.set_snapshot(GROUP, snapshot(50))
    rejected = await envoy.response()
    await envoy.request(t.ROUTE, nonce=rejected.nonce, error="bad route")
    assert await envoy.no_response()  # held: not resent
    status = harness.cache.status(GROUP)
    assert status["last_nack"]["node"] == "node-n"
    assert status["last_nack"]["message"] == "bad route"
    assert status["last_nack"]["version"] == harness.cache.snapshot(GROUP).version(t.ROUTE)
    # Back to the table the client kept: nothing to send, and it counts as ACKed.
    assert harness.cache.status(GROUP)["proxies"][0]["acked"]["rds"] == \
        good.system_version_info
    harness.cache.set_snapshot(GROUP, snapshot(0))
    assert await envoy.no_response()
    proxy = harness.cache.status(GROUP)["proxies"][0]
    assert proxy["acked"]["rds"] == harness.cache.snapshot(GROUP).version(t.ROUTE)
    # A new version goes out again.
    harness.cache.set_snapshot(GROUP, snapshot(70))
    assert (await envoy.response()).resources[0].version not in (
        good.resources[0].version, rejected.resources[0].version)
    await envoy.close()


async def test_ack_for_an_older_response_is_not_taken_for_the_current_one(harness):
    envoy = await _in_sync(harness, "node-o")
    harness.cache.set_snapshot(GROUP, snapshot(5))
    first = await envoy.response()
    await envoy.ack(first)
    publication = harness.cache.publish(GROUP, snapshot(10))
    second = await envoy.response()
    await envoy.ack(first)  # an old nonce again
    await asyncio.sleep(0.2)
    assert not publication.done.is_set()
    await envoy.ack(second)
    result = await harness.cache.wait(publication, timeout=2)
    assert result.converged
    await envoy.close()


async def test_reconnect_with_initial_versions_gets_only_what_differs(harness):
    current = harness.cache.snapshot(GROUP)
    versions = dict(current.resource_versions(t.CLUSTER))
    stale = sorted(versions)[0]
    versions[stale] = "old"
    versions["slot_gone"] = "v1"  # held by the client, no longer published
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER, initial=versions)
    response = await envoy.response()
    assert _names(response) == [stale]
    assert list(response.removed_resources) == ["slot_gone"]
    await envoy.close()


async def test_reconnect_holding_everything_is_in_sync_without_a_push(harness):
    current = harness.cache.snapshot(GROUP)
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER, initial=dict(current.resource_versions(t.CLUSTER)))
    assert await envoy.no_response()
    proxy = harness.cache.status(GROUP)["proxies"][0]
    assert proxy["acked"]["cds"] == current.version(t.CLUSTER)
    await envoy.close()


async def test_routes_wait_for_clusters_and_endpoints(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER)
    clusters = await envoy.response()
    await envoy.request(t.ROUTE, subscribe=(ROUTE_NAME,))
    assert await envoy.no_response()  # clusters outstanding: routes wait
    await envoy.ack(clusters)
    assert _names(await envoy.response()) == [ROUTE_NAME]
    await envoy.close()


async def test_a_cluster_update_resends_endpoints(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER)
    await envoy.ack(await envoy.response())
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue", "slot_green"))
    await envoy.ack(await envoy.response())
    current = harness.cache.snapshot(GROUP)
    clusters = list(current.resources(t.CLUSTER).values())
    changed = type(clusters[0])()
    changed.CopyFrom(current.resources(t.CLUSTER)["slot_blue"])
    changed.connect_timeout.seconds = 7
    harness.cache.set_snapshot(GROUP, Snapshot.build(
        listeners=current.resources(t.LISTENER).values(),
        routes=current.resources(t.ROUTE).values(),
        clusters=[changed if c.name == "slot_blue" else c for c in clusters],
        endpoints=current.resources(t.ENDPOINT).values()))
    cds = await envoy.response()
    assert _names(cds) == ["slot_blue"]
    await envoy.ack(cds)
    eds = await envoy.response()
    assert eds.type_url == t.ENDPOINT
    assert _names(eds) == ["slot_blue", "slot_green"]
    await envoy.close()


async def test_sotw_and_delta_proxies_converge_together(harness):
    sotw = harness.client("sotw")
    current = harness.cache.snapshot(GROUP)
    for type_url, names in ((t.CLUSTER, ()), (t.ENDPOINT, tuple(current.names(t.ENDPOINT))),
                            (t.LISTENER, ()), (t.ROUTE, (ROUTE_NAME,))):
        await sotw.request(type_url, names=names)
        await sotw.ack(await sotw.response(), names=names)
    delta = await _in_sync(harness, "delta")
    publication = harness.cache.publish(GROUP, snapshot(60))
    await sotw.ack(await sotw.response(), names=(ROUTE_NAME,))
    await asyncio.sleep(0.1)
    assert not publication.done.is_set()  # the delta proxy has not answered
    await delta.ack(await delta.response())
    result = await harness.cache.wait(publication, timeout=2)
    assert result.converged and sorted(o.node_id for o in result.outcomes) == ["delta", "sotw"]
    await sotw.close()
    await delta.close()


async def test_unknown_type_is_ignored(harness):
    envoy = harness.delta_client()
    await envoy.request("type.googleapis.com/unknown.Type")
    assert await envoy.no_response()
    await envoy.close()


def _grpc_snapshot(green: int = 0, *, blue_healthy: bool = True) -> Snapshot:
    """The topology with the proxyless API listener, and a choice of blue's health."""
    from tests.xds_fakes import BLUE, GREEN
    from triton_slots.slot import Slot
    from turnout.topology import build_snapshot
    from turnout.weights import Weights

    return build_snapshot(
        ingress_host="127.0.0.1", ingress_port=8080,
        slots={"blue": Slot("blue", (BLUE,)), "green": Slot("green", (GREEN,))},
        health={BLUE: blue_healthy, GREEN: True}, weights=Weights.with_green(green),
        grpc_target="turnout")


async def test_sends_are_counted_one_per_response(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER)
    await envoy.ack(await envoy.response())
    await envoy.request(t.ROUTE, subscribe=(ROUTE_NAME,))
    await envoy.ack(await envoy.response())
    for green in (10, 20):
        harness.cache.set_snapshot(GROUP, snapshot(green))
        await envoy.ack(await envoy.response())
    assert harness.delta.sends_by_type == {t.CLUSTER: 1, t.ROUTE: 3, t.ENDPOINT: 0,
                                           t.LISTENER: 0}
    await envoy.close()


async def test_the_configured_default_group_serves_unknown_claims():
    import grpc

    from xds_server import DeltaAdsServer, SnapshotCache

    cache = SnapshotCache()
    cache.set_snapshot("fleet-a", snapshot(0))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((DeltaAdsServer(cache, default_group="fleet-a").handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    from tests.xds_fakes import FakeDeltaEnvoy

    envoy = FakeDeltaEnvoy(port, "n", "nobody-publishes-this")
    try:
        await envoy.request(t.CLUSTER)
        assert (await envoy.response()).resources  # served fleet-a's clusters
    finally:
        await envoy.close()
        await server.stop(None)


async def test_a_rejected_type_does_not_hold_back_the_others(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER)
    clusters = await envoy.response()
    await envoy.request(t.CLUSTER, nonce=clusters.nonce, error="bad cluster")
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    assert _names(await envoy.response()) == ["slot_blue"]
    await envoy.close()


async def test_wildcard_plus_a_named_only_resource(harness):
    harness.cache.set_snapshot(GROUP, _grpc_snapshot())
    envoy = harness.delta_client()
    await envoy.request(t.LISTENER)  # wildcard: Envoy's listener, not the API listener
    first = await envoy.response()
    assert _names(first) == ["ingress"]
    await envoy.ack(first)
    await envoy.request(t.LISTENER, subscribe=("turnout",))  # and by name: both held
    assert _names(await envoy.response()) == ["turnout"]
    await envoy.close()


async def test_named_only_subscription_then_star(harness):
    harness.cache.set_snapshot(GROUP, _grpc_snapshot())
    grpc_client = harness.delta_client()
    await grpc_client.request(t.LISTENER, subscribe=("turnout",))  # like gRPC: by name
    first = await grpc_client.response()
    assert _names(first) == ["turnout"]
    await grpc_client.ack(first)
    await grpc_client.request(t.LISTENER, subscribe=("*",))  # now every listener too
    second = await grpc_client.response()
    assert _names(second) == ["ingress"]
    await grpc_client.ack(second)
    await grpc_client.request(t.LISTENER, unsubscribe=("*",))
    dropped = await grpc_client.response()  # no longer wanted: removed
    assert (_names(dropped), list(dropped.removed_resources)) == ([], ["ingress"])
    await grpc_client.ack(dropped)
    harness.cache.set_snapshot(GROUP, Snapshot.build(
        listeners=[_grpc_snapshot().resources(t.LISTENER)["turnout"],
                   _moved_ingress()],
        routes=_grpc_snapshot().resources(t.ROUTE).values(),
        clusters=_grpc_snapshot().resources(t.CLUSTER).values(),
        endpoints=_grpc_snapshot().resources(t.ENDPOINT).values()))
    assert await grpc_client.no_response()  # no longer a wildcard subscriber
    await grpc_client.close()


def _moved_ingress():  # type: ignore[no-untyped-def]
    listener = type(_grpc_snapshot().resources(t.LISTENER)["ingress"])()
    listener.CopyFrom(_grpc_snapshot().resources(t.LISTENER)["ingress"])
    listener.address.socket_address.port_value = 9090
    return listener


async def test_named_clusters_are_not_a_wildcard(harness):
    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER, subscribe=("slot_blue",))
    assert _names(await envoy.response()) == ["slot_blue"]
    await envoy.close()


async def test_an_ack_that_also_subscribes_is_answered(harness):
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    first = await envoy.response()
    await envoy.request(t.ENDPOINT, nonce=first.nonce, subscribe=("slot_green",))
    green = await envoy.response()
    assert _names(green) == ["slot_green"]
    await envoy.request(t.ENDPOINT, nonce=green.nonce, unsubscribe=("slot_blue",))
    assert await envoy.no_response()  # an ACK that forgets a name needs no answer
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))  # forgotten: sent again
    assert _names(await envoy.response()) == ["slot_blue"]
    await envoy.close()


async def test_unsubscribing_an_unknown_name_is_harmless(harness):
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, unsubscribe=("never-asked",))
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    assert _names(await envoy.response()) == ["slot_blue"]
    await envoy.close()


async def test_nack_of_a_first_send_means_the_client_lacks_it(harness):
    harness.cache.set_snapshot(GROUP, _grpc_snapshot())
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    await envoy.ack(await envoy.response())
    await envoy.request(t.ENDPOINT, subscribe=("slot_green",))
    rejected = await envoy.response()
    await envoy.request(t.ENDPOINT, nonce=rejected.nonce, error="no")
    # A new version that leaves slot_green as it was: the client never took it, so it
    # comes again with the changed slot_blue.
    harness.cache.set_snapshot(GROUP, _grpc_snapshot(blue_healthy=False))
    assert _names(await envoy.response()) == ["slot_blue", "slot_green"]
    await envoy.close()


async def test_a_new_name_after_a_nack_is_answered_but_the_rejected_one_is_not_resent(
        harness):
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, subscribe=("slot_green",))
    rejected = await envoy.response()
    await envoy.request(t.ENDPOINT, nonce=rejected.nonce, error="no")
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    taken = await envoy.response()
    assert _names(taken) == ["slot_blue"]
    await envoy.ack(taken)
    assert await envoy.no_response()  # slot_green stays rejected at this version
    assert harness.cache.status(GROUP)["last_nack"]["message"] == "no"
    await envoy.close()


async def test_nack_after_the_name_was_dropped_keeps_the_stream(harness):
    envoy = harness.delta_client()
    await envoy.request(t.ENDPOINT, subscribe=("slot_green",))
    rejected = await envoy.response()
    await envoy.request(t.ENDPOINT, unsubscribe=("slot_green",))
    await envoy.request(t.ENDPOINT, nonce=rejected.nonce, error="no")
    await envoy.request(t.ENDPOINT, subscribe=("slot_blue",))
    assert _names(await envoy.response()) == ["slot_blue"]
    await envoy.close()


async def test_an_ack_that_changes_nothing_costs_no_flush(harness, monkeypatch):
    envoy = await _in_sync(harness, "quiet")
    while not harness.cache.status(GROUP)["proxies"][0]["in_sync"]:
        await asyncio.sleep(0.01)  # its last ACK has been taken
    calls = []
    real = harness.delta.flush
    monkeypatch.setattr(harness.delta, "flush", lambda s: calls.append(1) or real(s))
    harness.cache.set_snapshot(GROUP, snapshot(30))
    await envoy.ack(await envoy.response())
    await asyncio.sleep(0.1)
    assert len(calls) == 1  # the change itself; its ACK needed no second look
    await envoy.close()


async def test_a_nack_names_the_type(harness):
    envoy = harness.delta_client("typed")
    await envoy.request(t.ROUTE, subscribe=(ROUTE_NAME,))
    response = await envoy.response()
    await envoy.request(t.ROUTE, nonce=response.nonce, error="bad")
    await asyncio.sleep(0.1)
    nack = harness.cache.status(GROUP)["last_nack"]
    assert (nack["type"], nack["node"], nack["version"]) == \
        ("rds", "typed", response.system_version_info)
    await envoy.close()


async def test_delta_resources_carry_the_resource_itself(harness):
    from envoy.config.cluster.v3 import cluster_pb2

    envoy = harness.delta_client()
    await envoy.request(t.CLUSTER, subscribe=("slot_blue",))
    [resource] = (await envoy.response()).resources
    cluster = cluster_pb2.Cluster()
    assert resource.resource.type_url == t.CLUSTER
    resource.resource.Unpack(cluster)
    assert cluster.name == "slot_blue"
    await envoy.close()


async def test_a_nack_of_a_removal_means_the_client_still_holds_what_was_removed(harness):
    """Issue 25's rare path: a response that removed a resource is NACKed, so the client
    kept it. When the snapshot brings that resource back at the version the client holds,
    nothing is sent and the client counts as holding the current snapshot; while the
    rejected removal stands at its version it is not sent again."""
    envoy = harness.delta_client("node-r")
    await envoy.request(t.ROUTE, subscribe=(ROUTE_NAME,))
    first = await envoy.response()
    await envoy.ack(first)
    held = harness.cache.snapshot(GROUP)
    harness.cache.set_snapshot(GROUP, _without_routes(held), verify=False)
    removal = await envoy.response()
    assert list(removal.removed_resources) == [ROUTE_NAME]
    await envoy.request(t.ROUTE, nonce=removal.nonce, error="route still in use")
    assert await envoy.no_response()  # the rejected removal is not retried as it is
    harness.cache.set_snapshot(GROUP, held)  # the route is back, as the client holds it
    assert await envoy.no_response()
    [proxy] = [p for p in harness.cache.status(GROUP)["proxies"] if p["node"] == "node-r"]
    assert proxy["acked"]["rds"] == held.version(t.ROUTE)
    await envoy.close()
