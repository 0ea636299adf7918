"""Evaluate gate metrics into measurements, and a step's measurements into a verdict.

Conditions are evaluated here only. No data, NaN, too few requests, a missing baseline
or a query error is never Successful. Dry-run metrics are measured and recorded but
never decide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from gates.metrics.builtins import BUILTINS, REQUESTS
from gates.metrics.measurement import Measurement, Phase
from gates.metrics.provider import MetricsError, MetricsProvider, NoData
from gates.metrics.sources import ENVOY, PROMETHEUS, SHADOW, MetricSource, Query, as_source

REQUEST_COUNT = Query("requests", REQUESTS)


class MetricLike(Protocol):
    name: str
    builtin: str | None
    query: str | None
    max: float | None
    min: float | None
    max_ratio: float | None
    min_ratio: float | None
    min_delta: float
    dry_run: bool
    source: str
    sequential: tuple[float, float] | None

    @property
    def relative(self) -> bool: ...

    def thresholds(self) -> str: ...


@dataclass(frozen=True)
class GateRound:
    """All metrics evaluated once. Its phase: Failed if any deciding metric failed, else
    Error, else Inconclusive, else Successful."""

    at: float
    window_s: float
    measurements: tuple[Measurement, ...]
    # What the round saw beyond its numbers (a shadow step: its comparison's figures,
    # disagreeing outputs and first disagreeing requests), kept with the round.
    evidence: dict[str, Any] | None = None

    @property
    def phase(self) -> Phase:
        deciding = [m.phase for m in self.measurements if not m.dry_run]
        for phase in (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE):
            if phase in deciding:
                return phase
        return Phase.SUCCESSFUL if deciding else Phase.INCONCLUSIVE

    def as_dict(self) -> dict[str, Any]:
        data = {"at": self.at, "window_s": self.window_s, "phase": str(self.phase),
                "measurements": [m.as_dict() for m in self.measurements]}
        if self.evidence is not None:
            data["evidence"] = self.evidence
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateRound:
        return cls(data["at"], data["window_s"],
                   tuple(Measurement.from_dict(m) for m in data["measurements"]),
                   data.get("evidence"))


def _value(source: MetricSource, query: Query, slot: str, window_s: float,
           model: str = "") -> float:
    return source.value(query, slot=slot, window_s=window_s, model=model)


def _query_of(metric: MetricLike) -> Query:
    if metric.builtin is not None:
        # A builtin only the access-log stream answers has no PromQL (the policy checker
        # keeps it off the prometheus source).
        return Query(metric.builtin, BUILTINS.get(metric.builtin, ""))
    assert metric.query is not None
    return Query(None, metric.query)


def measure(
    provider: MetricsProvider | MetricSource, metric: MetricLike, *, candidate: str,
    active: str,
    window_s: float, min_requests: int, candidate_requests: float | None,
    baselines: dict[str, float], now: float | None = None, model: str = "",
    step_s: float | None = None,
) -> Measurement:
    """Evaluate one metric. ``baselines`` holds the last good active-slot value per metric
    (used when the active slot has too little traffic, e.g. at 100 %); it is updated.
    ``model`` narrows Triton's per-model metrics to the model being rolled out.

    A value that is not a finite number (NaN, +-Inf) from any source is never Successful:
    it is Inconclusive, or Failed where a threshold says so."""
    now = time.time() if now is None else now
    source = as_source(provider)

    def result(phase: Phase, message: str, **extra: Any) -> Measurement:
        return Measurement(metric.name, phase, message, threshold=metric.thresholds(),
                           dry_run=metric.dry_run, at=now, requests=candidate_requests,
                           **extra)

    if candidate_requests is None:
        return result(Phase.INCONCLUSIVE, "request count unavailable")
    sequential = metric.sequential
    if sequential is not None:  # the test itself says when the evidence suffices
        return _sequential(source, metric, result, candidate=candidate, active=active,
                           window_s=step_s or window_s, alpha=sequential[0],
                           beta=sequential[1])
    if candidate_requests < min_requests:
        return result(Phase.INCONCLUSIVE,
                      f"{candidate_requests:.0f} requests in window < minRequests {min_requests}")
    query = _query_of(metric)
    try:
        value = _value(source, query, candidate, window_s, model)
    except MetricsError as exc:
        return result(Phase.ERROR, f"query failed: {exc}")
    except NoData as exc:
        return result(Phase.INCONCLUSIVE, f"no data: {exc}")
    if math.isnan(value):
        return result(Phase.INCONCLUSIVE, "no data: the value is NaN")
    if metric.max is not None and value > metric.max:
        return result(Phase.FAILED, f"{value:.4g} > max {metric.max:g}", value=value)
    if metric.min is not None and value < metric.min:
        return result(Phase.FAILED, f"{value:.4g} < min {metric.min:g}", value=value)
    if math.isinf(value):
        return result(Phase.INCONCLUSIVE, f"no usable data: the value is {value}")
    if not metric.relative:
        return result(Phase.SUCCESSFUL, f"{value:.4g} within {metric.thresholds()}", value=value)
    baseline = _baseline(source, metric, query, active, window_s, min_requests, baselines,
                         model)
    if isinstance(baseline, Measurement):
        return result(baseline.phase, baseline.message, value=value)
    ratio = value / baseline if baseline > 0 else (1.0 if value == 0 else math.inf)
    if abs(value - baseline) <= metric.min_delta:
        # Within the absolute slack: a 1 ms baseline does not fail a 3 ms candidate.
        return result(Phase.SUCCESSFUL, f"{value:.4g} is {ratio:.2f}x active {baseline:.4g} "
                      f"(within minDelta {metric.min_delta:g})",
                      value=value, baseline=baseline, ratio=ratio)
    if metric.max_ratio is not None and ratio > metric.max_ratio:
        return result(Phase.FAILED, f"{value:.4g} is {ratio:.2f}x active {baseline:.4g} "
                      f"> {metric.max_ratio:g}x", value=value, baseline=baseline, ratio=ratio)
    if metric.min_ratio is not None and ratio < metric.min_ratio:
        return result(Phase.FAILED, f"{value:.4g} is {ratio:.2f}x active {baseline:.4g} "
                      f"< {metric.min_ratio:g}x", value=value, baseline=baseline, ratio=ratio)
    return result(Phase.SUCCESSFUL, f"{value:.4g} is {ratio:.2f}x active {baseline:.4g}",
                  value=value, baseline=baseline, ratio=ratio)


def _sequential(source: MetricSource, metric: MetricLike, result: Any, *, candidate: str,
                active: str, window_s: float, alpha: float, beta: float) -> Measurement:
    """The metric as a sequential test over the step so far (see gates.metrics.sequential)."""
    test = getattr(source, "sequential", None)
    if test is None or metric.builtin is None:
        return result(Phase.ERROR, "a sequential test needs source: envoy and a builtin")
    try:
        outcome = test(metric.builtin, candidate=candidate, active=active, window_s=window_s,
                       max_ratio=metric.max_ratio, min_delta=metric.min_delta,
                       error_max=metric.max, alpha=alpha, beta=beta)
    except MetricsError as exc:
        return result(Phase.ERROR, f"query failed: {exc}")
    except NoData as exc:
        return result(Phase.INCONCLUSIVE, f"no data yet: {exc}", gathering=True)
    return result(outcome.phase, outcome.message, value=outcome.bad / outcome.requests,
                  ratio=outcome.llr, gathering=outcome.phase is Phase.INCONCLUSIVE)


def _baseline(source: MetricSource, metric: MetricLike, query: Query, active: str,
              window_s: float, min_requests: int, baselines: dict[str, float], model: str = ""
              ) -> float | Measurement:
    try:
        active_requests = _value(source, REQUEST_COUNT, active, window_s, model)
        if active_requests >= min_requests:
            value = _value(source, query, active, window_s, model)
            if not math.isfinite(value):
                raise NoData(f"active slot value is {value}")
            baselines[metric.name] = value
            return value
    except MetricsError as exc:
        return Measurement(metric.name, Phase.ERROR, f"baseline query failed: {exc}")
    except NoData:
        pass
    if metric.name in baselines:
        return baselines[metric.name]
    return Measurement(metric.name, Phase.INCONCLUSIVE,
                       f"no baseline: active slot {active} has too little traffic")


def measure_round(
    provider: MetricsProvider | MetricSource | None, metrics: Iterable[MetricLike], *,
    candidate: str, active: str, window_s: float, min_requests: int,
    baselines: dict[str, float], model: str = "", stream: MetricSource | None = None,
    step_s: float | None = None, shadow: MetricSource | None = None,
) -> GateRound:
    """Every metric once, each from its own source (``stream`` for ``source: envoy``,
    ``shadow`` for ``source: shadow``, ``provider`` otherwise); a missing source is an
    Error measurement."""
    now = time.time()
    # Each source once (its wrapper and its candidate request count), by name.
    sources = {ENVOY: as_source(stream) if stream is not None else None,
               SHADOW: shadow,
               PROMETHEUS: as_source(provider) if provider is not None else None}
    counts: dict[str, tuple[float | None, str]] = {}

    def candidate_requests(name: str, source: MetricSource) -> tuple[float | None, str]:
        if name not in counts:
            try:
                requests: float | None = _value(source, REQUEST_COUNT, candidate, window_s,
                                                model)
                if requests is not None and not math.isfinite(requests):
                    requests = 0.0
                counts[name] = (requests, "")
            except MetricsError as exc:
                counts[name] = (None, f"query failed: {exc}")
            except NoData:
                counts[name] = (0.0, "")
        return counts[name]

    measurements = []
    for metric in metrics:
        name = metric.source if metric.source in sources else PROMETHEUS
        source = sources[name]
        if source is None:
            what = {ENVOY: "envoy access-log", SHADOW: "shadow"}.get(name, "metrics provider")
            measurements.append(Measurement(metric.name, Phase.ERROR, f"no {what} source "
                                            "configured", threshold=metric.thresholds(),
                                            dry_run=metric.dry_run, at=now))
            continue
        requests, request_error = candidate_requests(name, source)
        if request_error:
            measurements.append(Measurement(metric.name, Phase.ERROR, request_error,
                                            threshold=metric.thresholds(),
                                            dry_run=metric.dry_run, at=now))
            continue
        measurements.append(measure(source, metric, candidate=candidate, active=active,
                                    window_s=window_s, min_requests=min_requests,
                                    candidate_requests=requests, baselines=baselines, now=now,
                                    model=model, step_s=step_s))
    return GateRound(now, window_s, tuple(measurements))


@dataclass(frozen=True)
class Limits:
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int


class Decision(StrEnum):
    """What a step's rounds say."""

    FAILED = "failed"  # roll back
    HOLD = "hold"  # pause: not enough evidence for too long
    PASS = "pass"  # the last round succeeded
    WAIT = "wait"  # keep measuring


@dataclass(frozen=True)
class RoundVerdict:
    """The decision of a step's rounds, why, and the counts behind it."""

    decision: Decision
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def assess(rounds: Sequence[GateRound], limits: Limits) -> RoundVerdict:
    failed = sum(1 for r in rounds if r.phase is Phase.FAILED)
    # A round only gathering evidence for a sequential test is not missing data.
    inconclusive = sum(1 for r in rounds if r.phase is Phase.INCONCLUSIVE and any(
        m.phase is Phase.INCONCLUSIVE and not m.gathering and not m.dry_run
        for m in r.measurements))
    trailing_errors = 0
    for r in reversed(rounds):
        if r.phase is not Phase.ERROR:
            break
        trailing_errors += 1
    counts = {"rounds": len(rounds), "failed": failed, "inconclusive": inconclusive,
              "consecutive_errors": trailing_errors}
    if failed > limits.failure_limit:
        worst = next(r for r in reversed(rounds) if r.phase is Phase.FAILED)
        reasons = "; ".join(f"{m.metric}: {m.message}" for m in worst.measurements
                            if m.phase is Phase.FAILED and not m.dry_run)
        return RoundVerdict(Decision.FAILED, reasons, counts)
    if trailing_errors > limits.consecutive_error_limit:
        last = rounds[-1].measurements
        detail = next((m.message for m in last if m.phase is Phase.ERROR), "")
        return RoundVerdict(Decision.HOLD,
                            f"{trailing_errors} consecutive metric errors ({detail})", counts)
    if inconclusive > limits.inconclusive_limit:
        last = rounds[-1].measurements
        detail = next((m.message for m in last if m.phase is Phase.INCONCLUSIVE), "")
        return RoundVerdict(Decision.HOLD, f"{inconclusive} inconclusive rounds ({detail})", counts)
    if rounds and rounds[-1].phase is Phase.SUCCESSFUL:
        return RoundVerdict(Decision.PASS, "", counts)
    return RoundVerdict(Decision.WAIT, "", counts)
