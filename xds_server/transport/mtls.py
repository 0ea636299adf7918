"""Mutual TLS on the ADS port. The handshake verifies the client certificate against the
CA (no certificate or an untrusted one never reaches the server); then a stream may claim
only a node id its certificate names as a URI SAN ``spiffe://turnout/node/<id>`` (a
trailing ``*`` is a prefix wildcard)."""

from __future__ import annotations

import grpc

from xds_server.pki import NODE_URI_PREFIX
from xds_server.transport import AuthContext, TlsFiles


def allowed_nodes(auth: AuthContext) -> list[str]:
    """The node ids (or ``prefix*`` patterns) the peer's certificate names."""
    names = [v.decode(errors="replace") for v in auth.get("x509_subject_alternative_name", ())]
    return [n[len(NODE_URI_PREFIX):] for n in names if n.startswith(NODE_URI_PREFIX)]


def may_claim(node_id: str, allowed: list[str]) -> bool:
    for pattern in allowed:
        if pattern.endswith("*"):
            if node_id.startswith(pattern[:-1]):
                return True
        elif node_id == pattern:
            return True
    return False


class MutualTls:
    name = "mtls"
    reporters = "proxies holding an ADS stream, by client certificate"

    def __init__(self, files: TlsFiles) -> None:
        self.files = files

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        credentials = grpc.ssl_server_credentials(
            ((self.files.key.read_bytes(), self.files.cert.read_bytes()),),
            root_certificates=self.files.ca.read_bytes(),
            require_client_auth=True,
        )
        return server.add_secure_port(address, credentials)

    def refusal(self, node_id: str, auth: AuthContext) -> str | None:
        allowed = allowed_nodes(auth)
        if not allowed:
            return "the client certificate names no node id (URI SAN spiffe://turnout/node/ID)"
        if not may_claim(node_id, allowed):
            return f"node id {node_id!r} is not in the client certificate ({', '.join(allowed)})"
        return None

    def reporter_refusal(self, node_id: str, auth: AuthContext, peer: str) -> str | None:
        """The same rule as ADS: the certificate must name the node, wherever it is."""
        return self.refusal(node_id, auth)

    def describe(self) -> dict[str, object]:
        return {"transport": self.name, "client_certificates": True,
                "ca": str(self.files.ca), "cert": str(self.files.cert)}
