"""How Turnout names what Envoy routes: the slots, their clusters and the headers. One
home for these names: the topology builds clusters and routes from them, the Prometheus
builtins select by them, and the access-log source attributes requests by them.

Per slot there are, for each protocol (gRPC ``slot_<slot>``, HTTP ``slot_<slot>_http``),
the cluster of its own servers, an aggregate the weighted split names (``<cluster>_ha``:
its servers, then the other slot's when none is healthy) and the cluster preview (pinned)
requests take (``<cluster>_preview``: the same servers, statistics of its own, so the
gates never count pinned traffic)."""

from __future__ import annotations

SLOT_NAMES: tuple[str, str] = ("blue", "green")
#: The request header that pins a request to one slot (preview); its value is the slot name.
SLOT_HEADER = "x-turnout-slot"
#: The request header carrying the operator's preview key; without the right key the slot
#: header is ignored (and stripped) and the request takes the weighted split.
PREVIEW_KEY_HEADER = "x-turnout-preview-key"
#: The response header naming the slot that served a request.
SERVED_BY_HEADER = "x-turnout-served-by"
#: KServe v2's bidirectional streaming RPC: one stream may carry many requests, so the
#: ingress bounds its age (``stream_max_age_s``) to move it onto the current split.
STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
#: Marks both answers of a shadowed request: ``live`` (what the client got) or ``copy``
#: (the candidate's, dropped by Envoy). On a request, only Envoy's copy carries it, with
#: the shadow key (stripped before any server).
SHADOW_HEADER = "x-turnout-shadow"
SHADOW_LIVE, SHADOW_COPY = "live", "copy"
#: The ingress tap filter's admin id: a shadow stage opens a ``POST /tap`` session on it.
TAP_CONFIG_ID = "turnout-shadow"
#: KServe v2 inference: the gRPC unary method, and the HTTP paths (RE2) of ``infer``,
#: ``generate`` and ``generate_stream``.
INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
HTTP_INFER_REGEX = r"^/v2/models/[^/]+(/versions/[^/]+)?/(infer|generate|generate_stream)$"


def cluster_name(slot: str) -> str:
    """The Envoy cluster that carries ``slot``'s gRPC traffic."""
    return f"slot_{slot}"


def http_cluster_name(slot: str) -> str:
    """The Envoy cluster that carries ``slot``'s KServe v2 HTTP/REST traffic."""
    return f"slot_{slot}_http"


def failover_name(cluster: str) -> str:
    """The aggregate cluster the weighted split names for ``cluster``: the slot's own
    servers first, the other slot's when none of them is healthy."""
    return f"{cluster}_ha"


def preview_name(cluster: str) -> str:
    """The cluster preview (pinned) requests for ``cluster``'s slot take: the same
    servers, its own statistics, so gates never count pinned traffic."""
    return f"{cluster}_preview"


def split_clusters(slot: str) -> tuple[str, ...]:
    """Every cluster a request of the weighted split can be counted against for ``slot``:
    each protocol's own cluster and its aggregate (never the preview clusters)."""
    return tuple(c for base in (cluster_name(slot), http_cluster_name(slot))
                 for c in (base, failover_name(base)))


_SPLIT_SLOT = {cluster: slot for slot in SLOT_NAMES for cluster in split_clusters(slot)}


def split_slot(cluster: str) -> str | None:
    """The slot whose split traffic ``cluster`` carries; None for a preview cluster or
    anything else."""
    return _SPLIT_SLOT.get(cluster)
