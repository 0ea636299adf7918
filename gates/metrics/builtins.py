"""Built-in per-slot metrics as PromQL over Envoy's and Triton's metrics.

Placeholders: ``$slot`` (the ``slot`` label the scrape config puts on each Triton target),
``$cluster`` (the slot's Envoy cluster) and ``$window`` (a range such as ``6s``).
"""

from __future__ import annotations

from string import Template

REQUESTS = 'sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="$cluster"}[$window]))'

BUILTINS: dict[str, str] = {
    # Triton's own failure counter over all of its requests.
    "error_rate": (
        'sum(increase(nv_inference_request_failure{slot="$slot"}[$window])) / '
        '(sum(increase(nv_inference_request_success{slot="$slot"}[$window])) + '
        'sum(increase(nv_inference_request_failure{slot="$slot"}[$window])))'
    ),
    # 5xx answers Envoy saw from (or made for) the slot, over all requests to it.
    "upstream_5xx_rate": (
        '(sum(increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name="$cluster",'
        'envoy_response_code_class="5"}[$window])) or vector(0)) / ' + REQUESTS
    ),
    # p99 of Envoy's upstream request time (ms) for the slot's cluster.
    "p99_latency_ms": (
        'histogram_quantile(0.99, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket'
        '{envoy_cluster_name="$cluster"}[$window])))'
    ),
    # Mean time Triton spent per successful request (ms).
    "mean_latency_ms": (
        'sum(rate(nv_inference_request_duration_us{slot="$slot"}[$window])) / '
        'sum(rate(nv_inference_request_success{slot="$slot"}[$window])) / 1000'
    ),
    "throughput_rps": 'sum(rate(nv_inference_request_success{slot="$slot"}[$window]))',
    "cpu_utilization": 'avg(nv_cpu_utilization{slot="$slot"})',
    "gpu_utilization": 'avg(nv_gpu_utilization{slot="$slot"})',
}


def render(query: str, *, slot: str, window_s: float) -> str:
    return Template(query).safe_substitute(
        slot=slot, cluster=f"slot_{slot}", window=f"{max(1, round(window_s))}s"
    )
