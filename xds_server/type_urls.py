"""xDS type URLs and the order in which types are pushed (make before break)."""

from collections.abc import Collection

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

#: Clusters, then their endpoints, then listeners, then routes: a route never names a
#: cluster Envoy does not have yet.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

#: Types whose responses carry the full set (a missing resource is deleted).
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})


def is_wildcard(type_url: str, names: Collection[str]) -> bool:
    """A wildcard subscription: a full-set type (LDS, CDS) asked for with no names or with
    ``*`` (Envoy). gRPC's xDS client names its listener and clusters instead."""
    return type_url in WILDCARD_TYPES and (not names or "*" in names)


#: Types whose pending pushes wait until the stream has ACKed clusters and endpoints.
DEPENDENT_TYPES = frozenset({LISTENER, ROUTE})

SHORT_NAMES = {LISTENER: "lds", ROUTE: "rds", CLUSTER: "cds", ENDPOINT: "eds"}
ALL_TYPES = frozenset(SHORT_NAMES)
