"""Where gate metrics come from: the one place that turns a metric's query into a number.

    PromQLSource       Prometheus (or any MetricsProvider): builtins and custom PromQL
    EnvoyStreamSource  Envoy's gRPC access-log stream, kept in per-slot windows: request
                       count, error rate and latency quantiles, and for streams TTFT, ITL,
                       tokens/s and stream errors (STREAM_METRICS); ~100 ms fresh, and
                       still there when Prometheus is down

    ShadowSource       a shadow step's comparison of the candidate's answers with the
                       active's on the same live requests (``gates.shadow``): requests
                       compared, disagreement rate, the latency ratio; since the step began

A metric says which with ``source`` (``prometheus``, the default, ``envoy`` or ``shadow``);
adding a source is one class here and one entry in ``SOURCES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gates.metrics.builtins import render
from gates.metrics.provider import MetricsError, MetricsProvider, NoData
from gates.metrics.sequential import MIN_REFERENCE, QUANTILES, SprtResult, hypotheses, sprt
from gates.metrics.windows import SlotWindows

PROMETHEUS = "prometheus"
ENVOY = "envoy"
SHADOW = "shadow"
SOURCES = (PROMETHEUS, ENVOY, SHADOW)


def _no_data(what: str, slot: str, window_s: float) -> NoData:
    return NoData(f"no {what} to {slot} in the last {window_s:g}s")


def _quantile(q: float, of: str = "latency") -> Callable[[SlotWindows, str, float], float]:
    def read(w: SlotWindows, slot: str, window_s: float) -> float:
        value = w.quantile(slot, q, window_s, of=of)
        if value != value:  # NaN: nothing in the window
            raise _no_data("streams" if of != "latency" else "requests", slot, window_s)
        return value
    return read


def _error_rate(w: SlotWindows, slot: str, window_s: float) -> float:
    errors, requests = w.errors(slot, window_s)
    if requests == 0:
        raise _no_data("requests", slot, window_s)
    return errors / requests


def _stream_error_rate(w: SlotWindows, slot: str, window_s: float) -> float:
    errors, streams, _ = w.streams(slot, window_s)
    if streams == 0:
        raise _no_data("streams", slot, window_s)
    return errors / streams


def _tokens_per_s(w: SlotWindows, slot: str, window_s: float) -> float:
    _, streams, responses = w.streams(slot, window_s)
    if streams == 0:
        raise _no_data("streams", slot, window_s)
    return responses / window_s


#: Everything the access-log stream answers, one entry each: builtin -> how to read it from
#: a slot's windows over a window. (Adding one is one entry here; the policy checker and
#: the schema's description read this.)
STREAM_METRICS: dict[str, Callable[[SlotWindows, str, float], float]] = {
    "requests": lambda w, slot, window_s: float(w.requests(slot, window_s)),
    "requests_rps": lambda w, slot, window_s: w.requests(slot, window_s) / window_s,
    "error_rate": _error_rate,
    "p50_latency_ms": _quantile(0.5),
    "p99_latency_ms": _quantile(0.99),
    # Streams (decoupled models): time to first response, time between responses, the
    # responses (tokens) per second, and the share of streams that ended in an error.
    "ttft_p50_ms": _quantile(0.5, "ttft"),
    "ttft_p99_ms": _quantile(0.99, "ttft"),
    "itl_p99_ms": _quantile(0.99, "itl"),
    "tokens_per_s": _tokens_per_s,
    "stream_error_rate": _stream_error_rate,
}
#: What a policy may ask of the envoy source (``requests`` is the gates' own count).
STREAM_BUILTINS = tuple(name for name in STREAM_METRICS if name != "requests")
#: Builtins only the access-log stream answers (Prometheus has no per-stream figures).
STREAM_ONLY = ("ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms", "tokens_per_s",
               "stream_error_rate")


class ShadowFigures(Protocol):
    """What a shadow step saw so far (``gates.shadow.compare.ShadowStats``)."""

    compared: int
    disagreed: int

    @property
    def disagreement_rate(self) -> float | None: ...

    @property
    def latency_ratio(self) -> float | None: ...


def _shadow_rate(stats: ShadowFigures) -> float:
    if stats.disagreement_rate is None:
        raise NoData("no shadowed request compared yet")
    return stats.disagreement_rate


def _shadow_latency(stats: ShadowFigures) -> float:
    if stats.latency_ratio is None:
        raise NoData("no shadowed request timed on both slots yet")
    return stats.latency_ratio


#: Everything a shadow step answers: builtin -> how to read it from the step's figures.
SHADOW_METRICS: dict[str, Callable[[ShadowFigures], float]] = {
    "requests": lambda stats: float(stats.compared),
    "disagreement_rate": _shadow_rate,
    "shadow_latency_ratio": _shadow_latency,
}
SHADOW_BUILTINS = tuple(name for name in SHADOW_METRICS if name != "requests")


@dataclass(frozen=True)
class Query:
    """A metric's question: a builtin's name (``requests``: the request count) and its
    PromQL template (empty for custom queries' name)."""

    builtin: str | None
    promql: str


class MetricSource(Protocol):
    def value(self, query: Query, *, slot: str, window_s: float, model: str = "") -> float:
        """One finite number; raises MetricsError (could not ask) or NoData."""
        ...


class PromQLSource:
    def __init__(self, provider: MetricsProvider) -> None:
        self.provider = provider

    def value(self, query: Query, *, slot: str, window_s: float, model: str = "") -> float:
        return self.provider.query_value(render(query.promql, slot=slot, window_s=window_s,
                                                model=model))


class EnvoyStreamSource:
    """Reads the per-slot windows the access-log stream fills. Per slot, not per model:
    Envoy's view of the slot's traffic."""

    def __init__(self, windows: SlotWindows) -> None:
        self.windows = windows

    def value(self, query: Query, *, slot: str, window_s: float, model: str = "") -> float:
        read = STREAM_METRICS.get(query.builtin or "")
        if read is None:
            raise MetricsError(f"{query.builtin or 'a PromQL query'} is not available from "
                               f"the envoy source (it has {', '.join(STREAM_BUILTINS)})")
        return read(self.windows, slot, window_s)

    def sequential(self, builtin: str, *, candidate: str, active: str, window_s: float,
                   max_ratio: float | None, min_delta: float, error_max: float | None,
                   alpha: float, beta: float) -> SprtResult:
        """The SPRT of the candidate's requests in the window against the active slot's
        (see :mod:`gates.metrics.sequential`); raises NoData without requests."""
        w = self.windows
        if builtin == "error_rate":
            bad, requests = w.errors(candidate, window_s)
            active_bad, active_requests = w.errors(active, window_s)
        elif builtin in QUANTILES:
            reference = w.quantile(active, QUANTILES[builtin], window_s)
            if reference != reference:
                raise NoData(f"no requests to the active slot {active} yet")
            limit = max((max_ratio or 1.0) * reference, reference + min_delta)
            bad, requests = w.exceeding(candidate, limit, window_s)
            active_bad, active_requests = w.exceeding(active, limit, window_s)
        else:
            raise MetricsError(f"no sequential test for {builtin}")
        if active_requests < MIN_REFERENCE:
            raise NoData(f"{active_requests} requests on the active slot {active}; the "
                         f"reference needs {MIN_REFERENCE}")
        if requests == 0:
            raise NoData(f"no requests to {candidate} yet")
        # Laplace's estimate: a reference of few requests is not taken as exact.
        p0, p1 = hypotheses(builtin, (active_bad + 1) / (active_requests + 2),
                            error_max=error_max)
        return sprt(bad, requests, p0, p1, alpha, beta)


class ShadowSource:
    """Reads the running shadow step's figures (``figures()``: None when no shadow step
    runs). The candidate's figures only: the active slot is what they are compared with,
    so a ratio threshold has no baseline here (use max / min)."""

    def __init__(self, figures: Callable[[], ShadowFigures | None]) -> None:
        self.figures = figures

    def _stats(self) -> ShadowFigures:
        stats = self.figures()
        if stats is None:
            raise MetricsError("no shadow step is running (shadow metrics are measured in "
                               "shadow steps only)")
        return stats

    def value(self, query: Query, *, slot: str, window_s: float, model: str = "") -> float:
        read = SHADOW_METRICS.get(query.builtin or "")
        if read is None:
            raise MetricsError(f"{query.builtin or 'a PromQL query'} is not available from "
                               f"the shadow source (it has {', '.join(SHADOW_BUILTINS)})")
        return read(self._stats())

    def sequential(self, builtin: str, *, candidate: str, active: str, window_s: float,
                   max_ratio: float | None, min_delta: float, error_max: float | None,
                   alpha: float, beta: float) -> SprtResult:
        """The SPRT of disagreeing pairs: H0 the floor share (two copies of one version
        never disagree), H1 the gate's ``max``."""
        if builtin != "disagreement_rate":
            raise MetricsError(f"no sequential test for {builtin} from the shadow source")
        stats = self._stats()
        if stats.compared == 0:
            raise NoData("no shadowed request compared yet")
        p0, p1 = hypotheses("error_rate", 0.0, error_max=error_max)
        return sprt(stats.disagreed, stats.compared, p0, p1, alpha, beta)


def as_source(provider: MetricsProvider | MetricSource) -> MetricSource:
    """A MetricSource for either kind (MetricsProviders speak PromQL)."""
    if callable(getattr(provider, "query_value", None)):
        return PromQLSource(provider)  # type: ignore[arg-type]
    return provider  # type: ignore[return-value]
