"""Read Triton's Prometheus metrics directly from a server's metrics port."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from triton_slots.slot import Endpoint


def scrape(endpoint: Endpoint, *, timeout: float = 2.0) -> dict[str, float]:
    """Sum each metric over its labels, keyed by the name Triton exposes (for instance
    ``nv_inference_request_success``; the parser's ``_total`` suffix is dropped)."""
    with urllib.request.urlopen(endpoint.metrics_url, timeout=timeout) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = family.name if sample.name == family.name + "_total" else sample.name
            totals[name] = totals.get(name, 0.0) + sample.value
    return totals


def requests_served(endpoints: Iterable[Endpoint]) -> int:
    """Successful plus failed inference requests counted by these servers."""
    total = 0.0
    for endpoint in endpoints:
        sample = scrape(endpoint)
        total += sample.get("nv_inference_request_success", 0.0)
        total += sample.get("nv_inference_request_failure", 0.0)
    return int(total)
