"""What one publication did, as the rollout reads it: who ACKed, whether the quorum was
met, whether a rollback may complete, and how a push is reported."""

from __future__ import annotations

import pytest

from xds_server import type_urls as t
from xds_server.cache import Convergence, Nack, NodeOutcome, quorum_count, shortfall


def outcomes(*kinds: str) -> tuple[NodeOutcome, ...]:
    return tuple(NodeOutcome(f"n{i}", i, kind, 0.01 if kind != "timeout" else None)
                 for i, kind in enumerate(kinds))


@pytest.mark.parametrize("quorum, proxies, needed", [
    (1.0, 10, 10), (0.99, 100, 99), (0.95, 10, 9), (0.5, 3, 1), (0.5, 4, 2),
    (0.01, 10, 1), (0.7, 10, 7), (0.3, 10, 3), (1.0, 0, 0), (0.5, 0, 0)])
def test_the_quorum_is_a_floor_of_at_least_one(quorum, proxies, needed):
    assert quorum_count(quorum, proxies) == needed


def test_everyone_must_ack_by_default():
    assert Convergence("g", {}, 0.1, outcomes("acked", "acked")).converged
    assert not Convergence("g", {}, 0.1, outcomes("acked", "timeout")).converged
    assert not Convergence("g", {}, 0.1, outcomes("acked", "nacked")).converged
    assert Convergence("g", {}, 0.1, ()).converged  # nobody to wait for


def test_a_quorum_tolerates_stragglers_but_not_too_many():
    three_of_four = outcomes("acked", "acked", "acked", "timeout")
    assert Convergence("g", {}, 0.1, three_of_four, quorum=0.75).converged
    three_of_five = outcomes("acked", "acked", "timeout", "acked", "nacked")
    assert Convergence("g", {}, 0.1, three_of_five, quorum=0.6).converged
    assert not Convergence("g", {}, 0.1, three_of_five, quorum=0.8).converged
    assert Convergence("g", {}, 0.1, (), quorum=0.5).converged
    result = Convergence("g", {}, 0.1, three_of_four, quorum=0.75)
    assert result.acked == 3
    assert [o.node_id for o in result.stragglers] == ["n3"]


def test_a_rollback_needs_one_ack_and_no_rejection():
    assert Convergence("g", {}, 0.1, outcomes("acked", "timeout", "disconnected")).answered_ok
    assert not Convergence("g", {}, 0.1, outcomes("acked", "nacked")).answered_ok
    assert not Convergence("g", {}, 0.1, outcomes("timeout")).answered_ok
    assert not Convergence("g", {}, 0.1, ()).answered_ok


def test_a_push_reports_itself_whole():
    result = Convergence("fleet", {"cds": "v1"}, 0.25, outcomes("acked", "nacked"),
                         quorum=0.5)
    assert result.as_dict() == {
        "group": "fleet", "versions": {"cds": "v1"}, "seconds": 0.25, "converged": True,
        "quorum": 0.5, "acked": 1, "stragglers": ["n1"],
        "nodes": [{"node_id": "n0", "stream_id": 0, "outcome": "acked", "seconds": 0.01,
                   "detail": ""},
                  {"node_id": "n1", "stream_id": 1, "outcome": "nacked", "seconds": 0.01,
                   "detail": ""}]}


def test_too_few_proxies_are_timeouts_named_none():
    assert shortfall(3, 1) == [NodeOutcome("(none)", 0, "timeout", None,
                                           "fewer than 3 proxies connected")] * 2
    assert shortfall(2, 2) == [] and shortfall(1, 5) == [] and shortfall(0, 0) == []


def test_a_nack_reports_its_type_by_short_name():
    nack = Nack("envoy-1", t.CLUSTER, "v9", "bad cluster", 12.5)
    assert nack.as_dict() == {"node": "envoy-1", "type": "cds", "version": "v9",
                              "message": "bad cluster", "at": 12.5}
    odd = Nack("envoy-1", "type.googleapis.com/x.Y", "v9", "m", 1.0)
    assert odd.as_dict()["type"] == "type.googleapis.com/x.Y"
