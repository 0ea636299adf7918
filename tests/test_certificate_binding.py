"""Which node ids a client certificate may claim (README, "xDS over mutual TLS"): its URI
SANs ``spiffe://turnout/node/<id>`` name them exactly, or with a trailing ``*`` as a
prefix; anything else in the certificate names nothing. Both sides of every boundary,
written out by hand, and the refusal's message."""

from __future__ import annotations

import pytest

from xds_server.transport.mtls import MutualTls, allowed_nodes, may_claim


def _auth(*sans: str) -> dict[str, list[bytes]]:
    return {"x509_subject_alternative_name": [s.encode() for s in sans]}


@pytest.mark.parametrize("sans, nodes", [
    (("spiffe://turnout/node/envoy-0",), ["envoy-0"]),
    (("spiffe://turnout/node/envoy-0", "spiffe://turnout/node/envoy-1"),
     ["envoy-0", "envoy-1"]),
    (("spiffe://turnout/node/edge-*",), ["edge-*"]),
    (("DNS:envoy-0", "envoy-0", "spiffe://other/node/envoy-0", "spiffe://turnout/nodes/x",
      "SPIFFE://turnout/node/envoy-0", "https://turnout/node/envoy-0"), []),
    ((), []),
])
def test_only_turnouts_uri_sans_name_nodes(sans, nodes):
    assert allowed_nodes(_auth(*sans)) == nodes


@pytest.mark.parametrize("node, allowed, ok", [
    ("envoy-0", ["envoy-0"], True),
    ("envoy-0", ["envoy-1"], False),
    ("envoy-00", ["envoy-0"], False),      # an exact id is not a prefix
    ("envoy-", ["envoy-0"], False),
    ("Envoy-0", ["envoy-0"], False),       # case matters
    ("envoy-0 ", ["envoy-0"], False),
    ("", ["envoy-0"], False),
    ("edge-7", ["edge-*"], True),
    ("edge-", ["edge-*"], True),           # the prefix itself
    ("edg", ["edge-*"], False),
    ("xedge-7", ["edge-*"], False),        # a prefix anchors at the start
    ("anything", ["*"], True),             # a bare * allows every id
    ("envoy-0", [], False),
    ("envoy-0", ["envoy-1", "envoy-0"], True),
    ("edge-*", ["edge-1"], False),         # a * in the claim is just a character
])
def test_a_node_may_claim_exactly_what_its_certificate_names(node, allowed, ok):
    assert may_claim(node, allowed) is ok


def test_the_refusal_names_the_claim_and_the_certificates_ids():
    tls = MutualTls.__new__(MutualTls)
    assert tls.refusal("envoy-0", _auth("spiffe://turnout/node/envoy-0")) is None
    assert tls.refusal("envoy-9", _auth("spiffe://turnout/node/envoy-0",
                                        "spiffe://turnout/node/edge-*")) == \
        "node id 'envoy-9' is not in the client certificate (envoy-0, edge-*)"
    assert tls.refusal("envoy-0", _auth("DNS:envoy-0")) == \
        "the client certificate names no node id (URI SAN spiffe://turnout/node/ID)"
