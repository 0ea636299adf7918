"""The metrics-provider interface and its errors.

    MetricsError   the query could not be run (-> an Error measurement)
    NoData         the query ran and returned nothing usable (-> Inconclusive)
"""

from __future__ import annotations

from typing import Protocol


class MetricsError(Exception):
    """The provider could not answer (unreachable, timeout, rejected query)."""


class NoData(Exception):
    """The query returned no series, several series, or a non-finite value."""


class MetricsProvider(Protocol):
    def query_value(self, promql: str) -> float:
        """One finite scalar for an instant query; raises MetricsError or NoData."""
        ...
