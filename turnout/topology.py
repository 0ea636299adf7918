"""Turnout's desired state (slots, their endpoints' health, weights) as an xDS snapshot."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from triton_slots.slot import SLOT_NAMES, Endpoint
from turnout.weights import Weights
from xds_server import Snapshot
from xds_server.resources import (
    HostPort,
    grpc_cluster,
    http_listener,
    load_assignment,
    split_routes,
)

LISTENER_NAME = "ingress"
ROUTE_NAME = "ingress_routes"


def cluster_of(slot: str) -> str:
    return f"slot_{slot}"


def build_snapshot(
    *,
    ingress_host: str,
    ingress_port: int,
    endpoints: Mapping[str, list[Endpoint]],
    health: Mapping[Endpoint, bool],
    weights: Weights,
    resolve: Callable[[str], str] = lambda host: host,
) -> Snapshot:
    """Both slot clusters always present (so a weight change is an RDS-only change).
    ``resolve`` turns endpoint host names into IP addresses (EDS carries addresses only)."""
    clusters = {slot: cluster_of(slot) for slot in SLOT_NAMES}
    return Snapshot.build(
        listeners=[
            http_listener(
                LISTENER_NAME, host=ingress_host, port=ingress_port, route_config=ROUTE_NAME
            )
        ],
        routes=[split_routes(ROUTE_NAME, clusters=clusters, weights=weights.as_dict())],
        clusters=[grpc_cluster(name) for name in clusters.values()],
        endpoints=[
            load_assignment(
                clusters[slot],
                [
                    HostPort(resolve(e.host), e.grpc_port, health.get(e, False))
                    for e in endpoints.get(slot, [])
                ],
            )
            for slot in SLOT_NAMES
        ],
    )
