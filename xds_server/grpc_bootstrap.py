"""The bootstrap gRPC's own xDS client reads (``GRPC_XDS_BOOTSTRAP`` names a file holding
it, or ``GRPC_XDS_BOOTSTRAP_CONFIG`` holds it): where the control plane is and who the
client is. A client then dials ``xds:///<target>`` and gets the same split as Envoy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xds_server.pki import write_private
from xds_server.transport import TlsFiles


def grpc_bootstrap(servers: Sequence[str], *, node_id: str, cluster: str = "turnout",
                   tls: TlsFiles | None = None) -> dict[str, Any]:
    """``servers``: ``host:port`` of each control-plane replica, in order (gRPC uses the
    first; moving to the next when it is down is gRPC's xDS fallback, which the tests here
    do not exercise). With ``tls`` the client presents its
    certificate and verifies the control plane against the CA (``tls`` channel creds with
    gRPC's file-watcher certificate provider)."""
    if not servers:
        raise ValueError("grpc_bootstrap needs at least one control-plane address")
    creds: list[dict[str, Any]] = [{"type": "insecure"}]
    if tls is not None:
        creds = [{"type": "tls", "config": {
            "ca_certificate_file": str(tls.ca), "certificate_file": str(tls.cert),
            "private_key_file": str(tls.key)}}]
    return {
        "xds_servers": [{"server_uri": uri, "channel_creds": creds,
                         "server_features": ["xds_v3"]} for uri in servers],
        "node": {"id": node_id, "cluster": cluster, "locality": {}},
    }


def write_grpc_bootstrap(path: Path, servers: Sequence[str], **options: Any) -> Path:
    """Write the bootstrap (owner-only: it may name key files) and return its path."""
    write_private(path, json.dumps(grpc_bootstrap(servers, **options), indent=2).encode())
    return path
