"""Real Envoy + real Triton + our ADS server: splits, preview header, switching, NACK."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from triton_slots.loadgen import LoadGenerator, send
from triton_slots.routing import PREVIEW_KEY_HEADER, SLOT_HEADER
from turnout.cli import main as cli
from turnout.topology import ROUTE_NAME, split_routes
from xds_server import Snapshot
from xds_server import type_urls as t

pytestmark = pytest.mark.integration


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {slot: after[slot] - before[slot] for slot in before}


def test_split_90_10_within_3_points(live):
    result = live.set_green(10)
    assert result.converged, result
    before = live.served()
    stats = send(live.ingress, 2000, model="classifier", concurrency=4)
    served = _delta(before, live.served())
    assert stats.failed == 0, stats.errors
    assert served["blue"] + served["green"] == 2000
    green_share = served["green"] / 2000 * 100
    assert 7.0 <= green_share <= 13.0, served


@pytest.mark.parametrize("slot", ["blue", "green"])
def test_preview_header_reaches_only_the_named_slot(live, slot):
    # Weights send everything to the *other* slot: only the header can reach this one.
    assert live.set_green(0 if slot == "green" else 100).converged
    before = live.served()
    stats = send(live.ingress, 300, model="classifier", concurrency=2,
                 headers={SLOT_HEADER: slot, PREVIEW_KEY_HEADER: live.plane.preview_key})
    served = _delta(before, live.served())
    assert stats.failed == 0, stats.errors
    other = "blue" if slot == "green" else "green"
    assert served == {slot: 300, other: 0}


@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789"])
def test_preview_header_without_the_key_takes_the_split(live, key):
    """A client that only knows the header (or guesses a key) cannot reach the idle slot."""
    assert live.set_green(0).converged
    before = live.served()
    headers = {SLOT_HEADER: "green"}
    if key is not None:
        headers[PREVIEW_KEY_HEADER] = key
    stats = send(live.ingress, 200, model="classifier", concurrency=2, headers=headers)
    assert stats.failed == 0, stats.errors
    assert _delta(before, live.served()) == {"blue": 200, "green": 0}


def test_pinned_requests_are_not_counted_by_the_gates(live):
    """Preview traffic has its own clusters: the split's clusters (what the gates read)
    do not move while only pinned requests flow."""
    assert live.set_green(0).converged
    def split_total() -> int:
        stats = live.envoy.stats("cluster.slot_green")
        return sum(v for k, v in stats.items()
                   if k.endswith(".upstream_rq_total") and "preview" not in k)
    before = split_total()
    pinned_before = live.envoy.stats("cluster.slot_green_preview").get(
        "cluster.slot_green_preview.upstream_rq_total", 0)
    stats = send(live.ingress, 100, model="classifier", concurrency=2,
                 headers={SLOT_HEADER: "green", PREVIEW_KEY_HEADER: live.plane.preview_key})
    assert stats.failed == 0, stats.errors
    time.sleep(0.2)
    assert split_total() == before
    assert live.envoy.stats("cluster.slot_green_preview")[
        "cluster.slot_green_preview.upstream_rq_total"] >= pinned_before + 100


def test_switch_0_100_0_under_load_drops_nothing(live):
    assert live.set_green(0).converged
    before = live.served()
    load = LoadGenerator(live.ingress, model="classifier", concurrency=4).start()
    pushes = []
    try:
        time.sleep(0.5)
        for green in (10, 25, 50, 75, 100, 75, 50, 25, 10, 0):
            result = live.set_green(green)
            assert result.converged, result
            pushes.append(result.seconds)
            time.sleep(0.3)
    finally:
        stats = load.stop()
    served = _delta(before, live.served())
    assert stats.failed == 0, stats.errors
    assert stats.ok > 500
    assert served["green"] > 0 and served["blue"] > 0
    assert served["blue"] + served["green"] == stats.ok
    # The switches were RDS-only: Envoy never drained a listener or rebuilt a cluster.
    envoy_stats = live.envoy.stats()
    for counter in ("listener_manager.listener_modified", "cluster_manager.cluster_modified",
                    "cluster_manager.cds.update_rejected"):
        assert envoy_stats[counter] == 0, counter
    assert envoy_stats["http.ingress.rds.ingress_routes.update_success"] >= 10


def test_route_envoy_rejects_is_nacked_held_and_shown(live):
    assert live.set_green(20).converged
    good = live.plane.cache.snapshot(live.plane.config.group)
    purple = split_routes(
        ROUTE_NAME, clusters={"blue": "slot_blue", "green": "slot_purple"},
        weights={"blue": 50, "green": 50},
    )
    bad = Snapshot.build(
        listeners=good.resources(t.LISTENER).values(), routes=[purple],
        clusters=good.resources(t.CLUSTER).values(),
        endpoints=good.resources(t.ENDPOINT).values(),
    )
    load = LoadGenerator(live.ingress, model="classifier", concurrency=2).start()
    try:
        time.sleep(0.3)
        sends_before = live.plane.ads.sends_by_type[t.ROUTE]
        result = live.loop.run(live.plane.publish(bad, verify=False))
        assert [o.outcome for o in result.outcomes] == ["nacked"]
        assert "slot_purple" in result.outcomes[0].detail
        time.sleep(1.0)
        # Held: the rejected table was sent once and not again.
        assert live.plane.ads.sends_by_type[t.ROUTE] == sends_before + 1
        # The CLI shows the NACK with the node and Envoy's message.
        shown = CliRunner().invoke(cli, ["status", "--json", "--dir", str(live.directory)])
        assert shown.exit_code == 0, shown.output
        nack = json.loads(shown.output)["xds"]["last_nack"]
        assert nack["node"] == "envoy-test"
        assert nack["type"] == "rds"
        assert "slot_purple" in nack["message"]
        text = CliRunner().invoke(cli, ["status", "--dir", str(live.directory)])
        assert "last NACK" in text.output and "slot_purple" in text.output
        # Envoy kept serving the last good table: traffic still flows, still split.
        before = live.served()
        stats = send(live.ingress, 400, model="classifier", concurrency=2)
        assert stats.failed == 0, stats.errors
        served = _delta(before, live.served())
        assert served["blue"] > 0 and served["green"] > 0
        # A good version is accepted again.
        assert live.set_green(0).converged
    finally:
        stats = load.stop()
    assert stats.failed == 0, stats.errors


def test_a_control_plane_that_cannot_read_its_store_answers_503_and_status_still_works(
        live, monkeypatch):
    """A replica cut from its store (a partition, a dead disk) keeps serving Envoy and
    answering: status says what it cannot read; a route that needs the store answers 503
    naming it, never 500."""
    import sqlite3

    from turnout.client import ApiClient
    from turnout.errors import ApiError
    from turnout.stack import StackInfo

    def unreadable(*_args: object, **_kw: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(live.plane.store, "latest_rollout", unreadable)
    monkeypatch.setattr(live.plane.store, "history", unreadable)
    info = StackInfo.load(live.directory)
    shown = CliRunner().invoke(cli, ["status", "--dir", str(live.directory)])
    assert shown.exit_code == 0, shown.output
    assert "STORE    state store" in shown.output and "disk I/O error" in shown.output
    with pytest.raises(ApiError, match="unreachable: disk I/O error") as refused:
        ApiClient(info.api_url, info.token).history()
    assert refused.value.status == 503
    monkeypatch.undo()
    shown = CliRunner().invoke(cli, ["status", "--dir", str(live.directory)])
    assert shown.exit_code == 0 and "STORE" not in shown.output, shown.output
