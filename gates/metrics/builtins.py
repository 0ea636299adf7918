"""Built-in per-slot metrics as PromQL over Envoy's and Triton's metrics.

Placeholders: ``$slot`` (the ``slot`` label the scrape config puts on each Triton target),
``$cluster`` (the slot's gRPC Envoy cluster), ``$clusters`` (a regex of the slot's gRPC and
HTTP clusters and their failover aggregates: Envoy counts ``upstream_rq_total`` on the
cluster that served, response codes and ``upstream_rq_time`` on the cluster routed to),
``$model`` (a regex of the model being rolled out; ``.+`` when unknown)
and ``$window`` (a range such as ``6s``). Envoy's figures are per slot (every model it
serves); Triton's are per model.
"""

from __future__ import annotations

from string import Template

from triton_slots.routing import cluster_name, split_clusters

REQUESTS = ('sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name=~"$clusters"}'
            '[$window]))')

_TRITON_OK = ('(sum(increase(nv_inference_request_success{slot="$slot",model=~"$model"}'
              '[$window])) or vector(0))')
_TRITON_FAILED = ('(sum(increase(nv_inference_request_failure{slot="$slot",model=~"$model"}'
                  '[$window])) or vector(0))')
UNDELIVERED = " + ".join(
    f'(sum(increase(envoy_cluster_{counter}{{envoy_cluster_name=~"$clusters"}}[$window])) '
    "or vector(0))"
    for counter in ("upstream_rq_retry_limit_exceeded", "upstream_cx_none_healthy",
                    "upstream_rq_timeout"))

BUILTINS: dict[str, str] = {
    # Failures over all requests to the model: Triton's own failure counter, plus the
    # requests Envoy could not deliver to the slot (retries exhausted, no healthy upstream,
    # timeouts): a dead candidate is a failure, not an absence of data.
    "error_rate": (
        "(" + _TRITON_FAILED + " + " + UNDELIVERED + ") / (" + _TRITON_OK + " + "
        + _TRITON_FAILED + " + " + UNDELIVERED + ")"
    ),
    # 5xx answers Envoy saw from (or made for) the slot, over all requests to it.
    "upstream_5xx_rate": (
        '(sum(increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"$clusters",'
        'envoy_response_code_class="5"}[$window])) or vector(0)) / ' + REQUESTS
    ),
    # Requests per second Envoy sent to the slot (every model it serves).
    "requests_rps": (
        'sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name=~"$clusters"}'
        '[$window]))'
    ),
    # Median of Envoy's upstream request time (ms) for the slot's clusters.
    "p50_latency_ms": (
        'histogram_quantile(0.5, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket'
        '{envoy_cluster_name=~"$clusters"}[$window])))'
    ),
    # p99 of Envoy's upstream request time (ms) for the slot's cluster.
    "p99_latency_ms": (
        'histogram_quantile(0.99, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket'
        '{envoy_cluster_name=~"$clusters"}[$window])))'
    ),
    # Mean time Triton spent per successful request (ms).
    "mean_latency_ms": (
        'sum(rate(nv_inference_request_duration_us{slot="$slot",model=~"$model"}[$window])) / '
        'sum(rate(nv_inference_request_success{slot="$slot",model=~"$model"}[$window])) / 1000'
    ),
    "throughput_rps": (
        'sum(rate(nv_inference_request_success{slot="$slot",model=~"$model"}[$window]))'
    ),
    "cpu_utilization": 'avg(nv_cpu_utilization{slot="$slot"})',
    "gpu_utilization": 'avg(nv_gpu_utilization{slot="$slot"})',
}


#: What a query may name with ``$``: see the module docstring.
PLACEHOLDERS = ("slot", "cluster", "clusters", "model", "window")


def placeholder_problems(query: str) -> list[str]:
    """Why ``query`` would not render as written: a ``$name`` that is no placeholder (a
    typo such as ``$windw`` would reach Prometheus as it is), or a stray ``$``."""
    template = Template(query)
    problems = [f"unknown placeholder ${name}; placeholders: "
                + ", ".join(f"${p}" for p in PLACEHOLDERS)
                for name in dict.fromkeys(template.get_identifiers())
                if name not in PLACEHOLDERS]
    if not template.is_valid():
        problems.append("a '$' that starts no placeholder (write $$ for a literal $)")
    return problems


def render(query: str, *, slot: str, window_s: float, model: str = "") -> str:
    return Template(query).safe_substitute(
        slot=slot, cluster=cluster_name(slot),
        clusters="|".join(split_clusters(slot)),
        # A PromQL regex inside a string literal: a literal dot is written \\.
        model=model.replace(".", "\\\\.") if model else ".+",
        window=f"{max(1, round(window_s))}s",
    )
