"""A real Envoy on incremental ADS (``DELTA_GRPC``) against the same control plane: it
gets its config, weight switches under load drop nothing and send only the route table,
and a route it rejects is NACKed, held and not resent."""

from __future__ import annotations

import time

import pytest

from tests.live import Live
from triton_slots.loadgen import LoadGenerator, send
from turnout.topology import ROUTE_NAME, split_routes
from xds_server import Snapshot
from xds_server import type_urls as t

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def delta_live(tmp_path_factory):
    topology = Live.start(tmp_path_factory.mktemp("delta"), delta=True)
    yield topology
    topology.stop()


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {slot: after[slot] - before[slot] for slot in before}


def test_envoy_on_delta_gets_config_over_the_delta_stream(delta_live):
    plane = delta_live.plane
    assert sum(plane.delta.sends_by_type.values()) >= 4  # every type came over delta
    assert sum(plane.ads.sends_by_type.values()) == 0  # nothing over state of the world
    stats = delta_live.envoy.stats()
    assert stats["cluster_manager.cds.update_success"] >= 1
    assert stats["listener_manager.lds.update_success"] >= 1
    result = delta_live.set_green(10)
    assert result.converged, result
    assert [o.node_id for o in result.outcomes] == ["envoy-test"]
    before = delta_live.served()
    sent = send(delta_live.ingress, 1000, model="classifier", concurrency=4)
    served = _delta(before, delta_live.served())
    assert sent.failed == 0, sent.errors
    assert 5.0 <= served["green"] / 10 <= 15.0, served


def test_switches_under_load_send_only_routes_and_drop_nothing(delta_live):
    assert delta_live.set_green(0).converged
    plane = delta_live.plane
    sends_before = dict(plane.delta.sends_by_type)
    before = delta_live.served()
    load = LoadGenerator(delta_live.ingress, model="classifier", concurrency=4).start()
    try:
        time.sleep(0.5)
        for green in (10, 50, 100, 50, 0):
            result = delta_live.set_green(green)
            assert result.converged, result
            time.sleep(0.3)
    finally:
        stats = load.stop()
    served = _delta(before, delta_live.served())
    assert stats.failed == 0, stats.errors
    assert stats.ok > 300
    assert served["green"] > 0 and served["blue"] > 0
    sent = {k: plane.delta.sends_by_type[k] - v for k, v in sends_before.items()}
    assert sent == {t.ROUTE: 5, t.CLUSTER: 0, t.ENDPOINT: 0, t.LISTENER: 0}
    envoy_stats = delta_live.envoy.stats()
    assert envoy_stats["listener_manager.listener_modified"] == 0
    assert envoy_stats["cluster_manager.cluster_modified"] == 0


def test_route_rejected_over_delta_is_nacked_held_and_traffic_keeps_flowing(delta_live):
    assert delta_live.set_green(20).converged
    plane = delta_live.plane
    good = plane.cache.snapshot(plane.config.group)
    purple = split_routes(ROUTE_NAME, clusters={"blue": "slot_blue", "green": "slot_purple"},
                          weights={"blue": 50, "green": 50})
    bad = Snapshot.build(
        listeners=good.resources(t.LISTENER).values(), routes=[purple],
        clusters=good.resources(t.CLUSTER).values(),
        endpoints=good.resources(t.ENDPOINT).values(),
    )
    load = LoadGenerator(delta_live.ingress, model="classifier", concurrency=2).start()
    try:
        time.sleep(0.3)
        sends_before = plane.delta.sends_by_type[t.ROUTE]
        result = delta_live.loop.run(plane.publish(bad, verify=False))
        assert [o.outcome for o in result.outcomes] == ["nacked"]
        assert "slot_purple" in result.outcomes[0].detail
        time.sleep(1.0)
        assert plane.delta.sends_by_type[t.ROUTE] == sends_before + 1  # held, not resent
        nack = plane.cache.status(plane.config.group)["last_nack"]
        assert nack["node"] == "envoy-test" and nack["type"] == "rds"
        before = delta_live.served()
        sent = send(delta_live.ingress, 400, model="classifier", concurrency=2)
        assert sent.failed == 0, sent.errors
        served = _delta(before, delta_live.served())
        assert served["blue"] > 0 and served["green"] > 0  # the last good split
        # Envoy kept the good table: publishing it again converges with nothing sent.
        again = delta_live.loop.run(plane.publish(good))
        assert again.converged, again
        assert plane.delta.sends_by_type[t.ROUTE] == sends_before + 1
        assert delta_live.set_green(0).converged
        before = delta_live.served()
        sent = send(delta_live.ingress, 200, model="classifier", concurrency=2)
        assert sent.failed == 0 and _delta(before, delta_live.served())["green"] == 0
    finally:
        stats = load.stop()
    assert stats.failed == 0, stats.errors
