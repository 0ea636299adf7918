"""Turnout's desired state (slots, their endpoints' health, weights) as an xDS snapshot.

Each slot has two clusters over the same Triton servers: gRPC (HTTP/2 to Triton's gRPC
port) and HTTP/REST (HTTP/1.1 to its HTTP port), each with active health checks of
Triton's liveness, outlier detection and a retry budget. The weighted split names an
aggregate cluster per slot and protocol (``<cluster>_ha``: the slot's servers, then the
other slot's), so when every server of a slot is gone its share fails over inside Envoy
until the controller acts. Preview routes (the slot header plus the operator's preview
key) name the slot's preview cluster: pinned traffic never fails over and is never counted
by the gates, which read the split's clusters. Routes, in order: gRPC requests pinned by
the preview header, other gRPC requests split by the weights, then the same two for
everything else (HTTP/REST). Both headers are stripped before requests go upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from envoy.config.route.v3 import route_pb2

from triton_slots.routing import (
    HTTP_INFER_REGEX,
    INFER_PATH,
    PREVIEW_KEY_HEADER,
    SERVED_BY_HEADER,
    SHADOW_COPY,
    SHADOW_HEADER,
    SHADOW_LIVE,
    SLOT_HEADER,
    SLOT_NAMES,
    STREAM_PATH,
    TAP_CONFIG_ID,
)
from triton_slots.slot import Endpoint, Slot
from turnout.weights import Weights
from xds_server import Snapshot
from xds_server.mirror import mirror_policy, sampled, self_cluster
from xds_server.resources import (
    HostPort,
    Resilience,
    aggregate_cluster,
    api_listener,
    cluster_route,
    grpc_cluster,
    http_cluster,
    http_listener,
    load_assignment,
    route_configuration,
    route_match,
    set_header,
    weighted_route,
)


@dataclass(frozen=True)
class Shadow:
    """A share of live requests (``percent``, 0 < p <= 100) also sent to ``slot`` (the
    candidate) by Envoy; clients always get the split's answer (``xds_server.mirror``).
    ``key`` marks the copies (only Envoy adds it; stripped before any server)."""

    slot: str
    percent: float
    key: str

    def __post_init__(self) -> None:
        if not 0 < self.percent <= 100:
            raise ValueError(f"a shadow share is a percent in (0, 100], not {self.percent}")


LISTENER_NAME = "ingress"
ROUTE_NAME = "ingress_routes"
#: The route table behind the API listener of proxyless gRPC clients (``xds:///NAME``).
PROXYLESS_ROUTE_NAME = "proxyless_routes"

__all__ = ["LISTENER_NAME", "PROXYLESS_ROUTE_NAME", "ROUTE_NAME", "build_snapshot",
           "split_routes"]


def inference_match(grpc: bool, match_grpc: bool = True, *, stream: bool = False
                    ) -> route_pb2.RouteMatch:
    """Inference calls only (what a shadow copies): gRPC ``ModelInfer`` (``stream``:
    ``ModelStreamInfer``), HTTP KServe v2 ``infer``, ``generate`` and ``generate_stream``;
    metadata and health calls are never copied."""
    if grpc:
        return route_match(grpc=match_grpc, path=STREAM_PATH if stream else INFER_PATH)
    return route_match(path_regex=HTTP_INFER_REGEX)


def split_routes(
    name: str,
    *,
    clusters: Mapping[str, str],
    weights: Mapping[str, int],
    http_clusters: Mapping[str, str] | None = None,
    split_clusters: Mapping[str, str] | None = None,
    split_http_clusters: Mapping[str, str] | None = None,
    preview_clusters: Mapping[str, str] | None = None,
    preview_http_clusters: Mapping[str, str] | None = None,
    header: str = SLOT_HEADER,
    preview_key: str | None = None,
    validate_clusters: bool = True,
    match_grpc: bool = True,
    retries: int = 5,
    idle_timeout_s: float = 60.0,
    stream_max_age_s: float | None = None,
    shadow: Shadow | None = None,
) -> route_pb2.RouteConfiguration:
    """The route table for a set of slots. ``clusters`` maps slot name to its gRPC cluster,
    ``http_clusters`` (optional) to its HTTP/REST cluster; ``weights`` maps slot name to a
    non-negative relative weight (their sum must be positive). The weighted split names
    ``split_clusters`` / ``split_http_clusters`` where given (failover clusters), preview
    routes always the slot's own cluster. With ``preview_key`` a preview route matches
    only requests that also carry the key (``x-turnout-preview-key``); anything else takes
    the split, and both headers are stripped before any request leaves Envoy. No route
    limits a request's whole duration (a generation may stream for minutes);
    ``idle_timeout_s`` without a byte either way ends it. With ``stream_max_age_s``, gRPC
    ``ModelStreamInfer`` streams taking the split (one stream may carry many requests)
    end that old and reopen on the split of their time: no stream keeps an old split
    forever. Pinned (preview) streams stay where their header sends them. With ``shadow``,
    a share of unary requests taking the split is also copied to the shadow slot's own
    (preview) cluster, never counted as its split traffic (``xds_server.mirror``).
    ``match_grpc=False`` drops the content-type condition from the gRPC routes (gRPC's
    own xDS client sends nothing else)."""
    unknown = set(weights) - set(clusters)
    if unknown:
        raise ValueError(f"weights name unknown slots: {sorted(unknown)}")
    protocols = [(preview_clusters or clusters, split_clusters or clusters, True)]
    if http_clusters:
        protocols.append((preview_http_clusters or http_clusters,
                          split_http_clusters or http_clusters, False))
    routes = []
    for by_slot, split_by_slot, grpc in protocols:
        suffix = "" if grpc else "-http"
        if shadow is not None and shadow.slot in by_slot:
            routes.append(cluster_route(
                f"shadow-copy{suffix}", route_match(grpc=grpc and match_grpc, headers=[
                    (SHADOW_HEADER, shadow.key)]), by_slot[shadow.slot],
                response_headers=[set_header(SERVED_BY_HEADER, shadow.slot),
                                  set_header(SHADOW_HEADER, SHADOW_COPY)], retries=0,
                idle_timeout_s=idle_timeout_s))
        for slot, cluster in sorted(by_slot.items()):
            routes.append(cluster_route(
                f"preview-{slot}" + ("" if grpc else "-http"),
                route_match(grpc=grpc and match_grpc, headers=[(header, slot)] + (
                    [(PREVIEW_KEY_HEADER, preview_key)] if preview_key else [])), cluster,
                response_headers=[set_header(SERVED_BY_HEADER, slot)], retries=retries,
                idle_timeout_s=idle_timeout_s))
        split = [(cluster, weights.get(slot, 0), [set_header(SERVED_BY_HEADER, slot)])
                 for slot, cluster in sorted(split_by_slot.items())]
        copied = {"mirrors": [mirror_policy(SHADOW_HEADER, shadow.key)],
                  "response_headers": [set_header(SHADOW_HEADER, SHADOW_LIVE)]
                  } if shadow is not None else {}
        if grpc and shadow is not None:
            routes.append(weighted_route(
                "split-shadow-streams", sampled(inference_match(True, match_grpc, stream=True),
                                                shadow.percent), split,
                retries=retries, idle_timeout_s=idle_timeout_s, max_age_s=stream_max_age_s,
                **copied))
        if grpc and stream_max_age_s is not None:
            routes.append(weighted_route(
                "split-streams", route_match(grpc=match_grpc, path=STREAM_PATH), split,
                retries=retries, idle_timeout_s=idle_timeout_s, max_age_s=stream_max_age_s))
        if shadow is not None:
            routes.append(weighted_route(
                f"split-shadow{suffix}", sampled(inference_match(grpc, match_grpc),
                                                 shadow.percent), split,
                retries=retries, idle_timeout_s=idle_timeout_s, **copied))
        routes.append(weighted_route(
            "split" if grpc else "split-http", route_match(grpc=grpc and match_grpc), split,
            retries=retries, idle_timeout_s=idle_timeout_s))
    return route_configuration(
        name, routes, validate_clusters=validate_clusters,
        remove_request_headers=(header, PREVIEW_KEY_HEADER, SHADOW_HEADER))


def eds_health(slots: Mapping[str, Slot], health: Mapping[Endpoint, bool]
               ) -> dict[Endpoint, bool]:
    """What EDS tells Envoy of each server's health: the control plane's probes, except
    that a slot none of whose servers answers them is published healthy, leaving the
    verdict to Envoy's own active health checks (every 0.5 s, from where traffic flows).
    A control plane cut from a slot's servers (a partition) must not make Envoy drop
    servers it still reaches, and send the slot's share to the other slot's version; a
    slot that is really down fails Envoy's checks too and fails over as before."""
    published = dict(health)
    for slot in slots.values():
        if slot.endpoints and not any(health.get(e, False) for e in slot.endpoints):
            published.update(dict.fromkeys(slot.endpoints, True))
    return published


def build_snapshot(
    *,
    ingress_host: str,
    ingress_port: int,
    slots: Mapping[str, Slot],
    health: Mapping[Endpoint, bool],
    weights: Weights,
    resolve: Callable[[str], str] = lambda host: host,
    resilience: Resilience | None = None,
    preview_key: str | None = None,
    access_log_cluster: str | None = None,
    grpc_target: str | None = None,
    idle_timeout_s: float = 60.0,
    stream_max_age_s: float | None = None,
    shadow: Shadow | None = None,
    tap: bool = False,
) -> Snapshot:
    """Both slots' clusters always present (so a weight change is an RDS-only change).
    ``resolve`` turns endpoint host names into IP addresses (EDS carries addresses only).
    With ``grpc_target``, proxyless gRPC clients of ``xds:///<grpc_target>`` get an API
    listener of that name and a route table with the same split and preview routes over
    the same gRPC clusters (their split's traffic is not seen by Envoy's statistics).
    ``tap`` puts the tap filter on the ingress (shadow traffic needs it; adding it is a
    listener change, so it is a stack setting, not switched per rollout); ``shadow``
    copies a share of the ingress's requests to a slot (Envoy's own ingress, proxyless
    clients never)."""
    if shadow is not None and not tap:
        raise ValueError("shadow traffic needs the tap filter (tap=True)")
    all_slots = {name: slots.get(name) or Slot(name) for name in SLOT_NAMES}
    resilience = resilience or Resilience()

    def hosts(slot: Slot, port: Callable[[Endpoint], int]) -> list[HostPort]:
        return [HostPort(resolve(e.host), port(e), health.get(e, False), e.http_port)
                for e in slot.endpoints]

    def others(name: str) -> list[Slot]:
        return [s for n, s in all_slots.items() if n != name]

    # gRPC's client takes no aggregate (failover) cluster Envoy accepts (it refuses the
    # CLUSTER_PROVIDED policy), and at most 5 attempts: its split names the slot clusters.
    grpc_routes = split_routes(
        PROXYLESS_ROUTE_NAME, clusters={n: s.preview_cluster for n, s in all_slots.items()},
        split_clusters={n: s.cluster for n, s in all_slots.items()},
        weights=weights.as_dict(), preview_key=preview_key, match_grpc=False, retries=4,
        idle_timeout_s=idle_timeout_s, stream_max_age_s=stream_max_age_s)
    return Snapshot.build(
        listeners=[
            http_listener(
                LISTENER_NAME, host=ingress_host, port=ingress_port, route_config=ROUTE_NAME,
                access_log_cluster=access_log_cluster,
                tap=TAP_CONFIG_ID if tap else None,
            ),
            *([api_listener(grpc_target, route_config=PROXYLESS_ROUTE_NAME)]
              if grpc_target else []),
        ],
        routes=[*([grpc_routes] if grpc_target else []), split_routes(
            ROUTE_NAME, clusters={n: s.cluster for n, s in all_slots.items()},
            http_clusters={n: s.http_cluster for n, s in all_slots.items()},
            split_clusters={n: s.failover_cluster for n, s in all_slots.items()},
            split_http_clusters={n: s.failover_http_cluster for n, s in all_slots.items()},
            preview_clusters={n: s.preview_cluster for n, s in all_slots.items()},
            preview_http_clusters={n: s.preview_http_cluster for n, s in all_slots.items()},
            weights=weights.as_dict(), preview_key=preview_key,
            idle_timeout_s=idle_timeout_s, stream_max_age_s=stream_max_age_s,
            shadow=shadow)],
        clusters=[c for n, s in all_slots.items() for c in (
            grpc_cluster(s.cluster, resilience=resilience),
            http_cluster(s.http_cluster, resilience=resilience),
            aggregate_cluster(s.failover_cluster,
                              [s.cluster, *(o.cluster for o in others(n))], resilience),
            aggregate_cluster(s.failover_http_cluster,
                              [s.http_cluster, *(o.http_cluster for o in others(n))],
                              resilience),
            # Pinned traffic: same servers, own statistics, no failover, no extra probes
            # (EDS carries the control plane's view of health).
            grpc_cluster(s.preview_cluster),
            http_cluster(s.preview_http_cluster),
        )] + ([self_cluster("127.0.0.1" if ingress_host in ("0.0.0.0", "::") else ingress_host,
                            ingress_port)] if tap else []),
        endpoints=[a for s in all_slots.values()
                   for a in (load_assignment(s.cluster, hosts(s, lambda e: e.grpc_port)),
                             load_assignment(s.http_cluster,
                                             hosts(s, lambda e: e.http_port)),
                             load_assignment(s.preview_cluster,
                                             hosts(s, lambda e: e.grpc_port)),
                             load_assignment(s.preview_http_cluster,
                                             hosts(s, lambda e: e.http_port)))],
    )

