"""How the ADS port is served and who may claim which node id: an xDS transport.

Two implementations, one file each: :mod:`.plaintext` (the local default: anyone who reaches
the port may claim any node id) and :mod:`.mtls` (TLS with client certificates verified
against a CA; a proxy may claim only the node ids its certificate names). :func:`choose`
is the one place that picks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

AuthContext = Mapping[str, Sequence[bytes]]


class Transport(Protocol):
    name: str

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """Add the listening port to ``server``; returns the bound port."""

    #: Who may report requests (Envoy's access-log stream, which the gates decide from).
    reporters: str

    def refusal(self, node_id: str, auth: AuthContext) -> str | None:
        """Why ``node_id`` may not be claimed over a connection with ``auth``; None if it
        may."""

    def reporter_refusal(self, node_id: str, auth: AuthContext, peer: str) -> str | None:
        """Why a stream reporting requests for ``node_id`` may not come from ``peer`` (a
        gRPC peer string) over a connection with ``auth``; None if it may."""

    def describe(self) -> dict[str, object]:
        """What status shows."""


def _loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or the name ``localhost``) is this host."""
    return host == "localhost" or _loopback_address(host)


def loopback_peer(peer: str) -> bool:
    """Whether a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``,
    ``unix:...``) is on this host. gRPC gives addresses, never names."""
    kind, _, rest = peer.partition(":")
    return kind == "unix" or _loopback_address(rest.rsplit(":", 1)[0])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for mTLS on the ADS port."""

    cert: Path
    key: Path
    ca: Path

    def as_dict(self) -> dict[str, str]:
        return {"cert": str(self.cert), "key": str(self.key), "ca": str(self.ca)}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> TlsFiles:
        return cls(Path(data["cert"]), Path(data["key"]), Path(data["ca"]))


def choose(tls: TlsFiles | None) -> Transport:
    """mTLS when certificate files are configured, else plaintext."""
    if tls is None:
        from xds_server.transport.plaintext import Plaintext
        return Plaintext()
    from xds_server.transport.mtls import MutualTls
    return MutualTls(tls)
