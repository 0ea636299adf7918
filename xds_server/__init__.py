"""Turnout's xDS control plane: ADS servers on ``grpc.aio``: state of the world
(``server``) and incremental (``delta``), siblings over one snapshot cache.

Layers, imports pointing inward::

    server   (streams, nonces, ACK/NACK)  ->  cache (snapshots per node group, ACK tracking)
                                          ->  snapshot (frozen value, consistency, encoding)
    resources (builders of Envoy messages)    types (type URLs)

The rollout controller talks to :class:`SnapshotCache` only ("publish this snapshot and
wait for the fleet"), never to streams.
"""

from xds_server.cache import Convergence, NodeOutcome, SnapshotCache
from xds_server.delta import DeltaAdsServer
from xds_server.errors import InconsistentSnapshotError, XdsError
from xds_server.server import AdsServer
from xds_server.snapshot import Snapshot

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
