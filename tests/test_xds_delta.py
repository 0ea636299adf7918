"""Incremental (delta) ADS rules, over real gRPC on loopback against an in-process server
sharing its cache with the state-of-the-world server."""

from __future__ import annotations

import asyncio

import pytest

from tests.xds_fakes import GROUP, AdsHarness, snapshot
from turnout.topology import ROUTE_NAME
from xds_server import Snapshot
from xds_server import type_urls as t


@pytest.fixture
async def harness():
    h = await AdsHarness.start()
    h.cache.set_snapshot(GROUP, snapshot(0))
    yield h
    await h.stop()


async def _in_sync(harness, node: str):
    """A delta client subscribed to every type, holding the current snapshot."""
    envoy = harness.delta_client(node)
    current = harness.cache.snapshot(GROUP)
    for type_url, names in ((t.CLUSTER, ()), (t.ENDPOINT, tuple(current.names(t.ENDPOINT))),
                            (t.LISTENER, ()), (t.ROUTE, (ROUTE_NAME,))):
        await envoy.request(type_url, subscribe=names)
        await envoy.ack(await envoy.response())
    return envoy


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
    current = harness.cache.snapshot(GROUP)
    without = Snapshot.build(listeners=(), routes=(),
                             clusters=current.resources(t.CLUSTER).values(),
                             endpoints=current.resources(t.ENDPOINT).values())
    harness.cache.set_snapshot(GROUP, without, verify=False)
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
