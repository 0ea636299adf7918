"""Metric gates: a provider interface (Prometheus first), measurements with one phase
enum, built-in per-slot metrics, and the evaluator with its limits."""

from gates.metrics.evaluator import Decision, GateRound, RoundVerdict, assess, measure_round
from gates.metrics.measurement import Measurement, Phase
from gates.metrics.prometheus import PrometheusProvider
from gates.metrics.provider import MetricsError, MetricsProvider, NoData

__all__ = [
    "Decision",
    "GateRound",
    "Measurement",
    "MetricsError",
    "MetricsProvider",
    "NoData",
    "Phase",
    "PrometheusProvider",
    "RoundVerdict",
    "assess",
    "measure_round",
]
