"""Prometheus as a metrics provider, through ``prometheus-api-client``."""

from __future__ import annotations

import math

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from gates.metrics.provider import MetricsError, NoData


class PrometheusProvider:
    """Instant queries against one Prometheus. Safe to use from several threads."""

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout
        # One attempt per query: the gate's rounds and limits decide what errors mean, and
        # the client's default retries with back-off turned a Prometheus outage into ~7 s
        # per round (measured by `make chaos`). An https Prometheus has its certificate
        # verified (disable_ssl=False): a gate must not trust an impostor's numbers.
        self._client = PrometheusConnect(url=url, disable_ssl=False, timeout=timeout,
                                         retry=Retry(total=0, connect=0, read=0))

    def query_value(self, promql: str) -> float:
        try:
            result = self._client.custom_query(promql)
        except (PrometheusApiClientException, requests.RequestException, ValueError) as exc:
            raise MetricsError(f"{self.url}: {exc}") from exc
        if not result:
            raise NoData("no series")
        if len(result) > 1:
            raise NoData(f"{len(result)} series; the query must aggregate to one")
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise NoData(f"unreadable sample {result[0]!r}") from exc
        if not math.isfinite(value):
            raise NoData(f"value is {value}")
        return value

