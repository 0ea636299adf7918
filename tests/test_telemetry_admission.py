"""Who may report requests: only a node holding an ADS stream (the cache knows which), from
loopback when the transport is plaintext."""

from __future__ import annotations

import pytest

from xds_server.cache import SnapshotCache
from xds_server.transport import loopback_peer


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


def test_plaintext_takes_reporters_from_this_host_only():
    from xds_server.transport.plaintext import Plaintext

    transport = Plaintext()
    assert transport.reporter_refusal("envoy-0", {}, "ipv4:127.0.0.1:5000") is None
    assert transport.reporter_refusal("envoy-0", {}, "ipv6:[::1]:5000") is None
    assert transport.reporter_refusal("envoy-0", {}, "ipv4:10.0.0.7:5000") == (
        "plaintext access-log streams are accepted from loopback only (use mTLS, "
        "`turnout stack up --tls`, beyond one host)")
    assert transport.reporters == "proxies holding an ADS stream, on loopback only (plaintext)"


def test_mtls_takes_reporters_by_the_certificate_wherever_they_are(tmp_path):
    from xds_server.transport import TlsFiles
    from xds_server.transport.mtls import MutualTls

    transport = MutualTls(TlsFiles(tmp_path / "c", tmp_path / "k", tmp_path / "ca"))
    auth = {"x509_subject_alternative_name": [b"spiffe://turnout/node/envoy-0"]}
    assert transport.reporter_refusal("envoy-0", auth, "ipv4:10.0.0.7:5000") is None
    assert transport.reporter_refusal("envoy-1", auth, "ipv4:127.0.0.1:5000") == (
        "node id 'envoy-1' is not in the client certificate (envoy-0)")
    assert transport.reporter_refusal("envoy-0", {}, "ipv4:127.0.0.1:5000") == (
        "the client certificate names no node id (URI SAN spiffe://turnout/node/ID)")
    assert transport.reporters == "proxies holding an ADS stream, by client certificate"
