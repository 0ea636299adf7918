"""Plaintext ADS: for a single host's loopback only. Any client may claim any node id."""

from __future__ import annotations

import grpc

from xds_server.transport import AuthContext, loopback_peer


class Plaintext:
    name = "plaintext"
    reporters = "proxies holding an ADS stream, on loopback only (plaintext)"

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        return server.add_insecure_port(address)

    def refusal(self, node_id: str, auth: AuthContext) -> str | None:
        return None

    def reporter_refusal(self, node_id: str, auth: AuthContext, peer: str) -> str | None:
        """Without certificates nothing proves who sends: only this host's processes."""
        if loopback_peer(peer):
            return None
        return ("plaintext access-log streams are accepted from loopback only (use mTLS, "
                "`turnout stack up --tls`, beyond one host)")

    def describe(self) -> dict[str, object]:
        return {"transport": self.name, "client_certificates": False,
                "warning": "plaintext xDS: any process reaching the port can read all "
                           "config and claim any node id; use --tls beyond loopback"}
