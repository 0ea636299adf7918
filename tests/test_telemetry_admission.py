"""Who may report requests: only a node holding an ADS stream (the cache knows which), from
loopback when the transport is plaintext."""

from __future__ import annotations

import pytest

from turnout.controlplane import loopback_peer
from xds_server.cache import SnapshotCache


@pytest.mark.parametrize("peer, local", [
    ("ipv4:127.0.0.1:5000", True),
    ("ipv4:127.255.0.9:1", True),
    ("ipv6:[::1]:5000", True),
    ("unix:/tmp/x.sock", True),
    ("ipv4:10.0.0.2:5000", False),
    ("ipv4:128.0.0.1:5000", False),
    ("ipv6:[::2]:5000", False),
    ("ipv6:[::ffff:10.0.0.1]:5000", False),
    ("ipv4:localhost:5000", False),  # gRPC gives addresses, never names
    ("", False),
    ("garbage", False),
])
def test_loopback_peers(peer, local):
    assert loopback_peer(peer) is local


def test_the_cache_knows_which_nodes_hold_a_stream():
    cache = SnapshotCache()
    assert not cache.holds("envoy-0")
    first = cache.open_stream("envoy-0", "g")
    second = cache.open_stream("envoy-0", "other")
    cache.open_stream("envoy-1", "g")
    assert cache.holds("envoy-0") and cache.holds("envoy-1") and not cache.holds("envoy")
    cache.close_stream(first)
    assert cache.holds("envoy-0"), "its second stream is still open"
    cache.close_stream(second)
    assert not cache.holds("envoy-0")
    cache.close_stream(second)  # twice: no negative count
    cache.open_stream("envoy-0", "g")
    assert cache.holds("envoy-0")
