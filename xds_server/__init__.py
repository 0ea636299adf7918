"""Turnout's xDS control plane: ADS servers on ``grpc.aio``: state of the world
(``server``) and incremental (``delta``), siblings over one snapshot cache.

Layers, imports pointing inward::

    server   (streams, nonces, ACK/NACK)  ->  cache (snapshots per node group, ACK tracking)
                                          ->  snapshot (frozen value, consistency, encoding)
    resources (builders of Envoy messages)    types (type URLs)

The rollout controller talks to :class:`SnapshotCache` only ("publish this snapshot and
wait for the fleet"), never to streams.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use (PEP 562): importing one module of the package, ``type_urls`` or
# ``pki`` say, must not load the gRPC server.
_HOMES = {
    "AdsServer": "xds_server.server",
    "Convergence": "xds_server.cache",
    "DeltaAdsServer": "xds_server.delta",
    "InconsistentSnapshotError": "xds_server.errors",
    "NodeOutcome": "xds_server.cache",
    "Snapshot": "xds_server.snapshot",
    "SnapshotCache": "xds_server.cache",
    "XdsError": "xds_server.errors",
}

__all__ = [
    "AdsServer",
    "Convergence",
    "DeltaAdsServer",
    "InconsistentSnapshotError",
    "NodeOutcome",
    "Snapshot",
    "SnapshotCache",
    "XdsError",
]

if TYPE_CHECKING:
    from xds_server.cache import Convergence, NodeOutcome, SnapshotCache
    from xds_server.delta import DeltaAdsServer
    from xds_server.errors import InconsistentSnapshotError, XdsError
    from xds_server.server import AdsServer
    from xds_server.snapshot import Snapshot


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'xds_server' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
