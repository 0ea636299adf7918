"""The sequential gate: Wald's SPRT decides by the evidence, and through the evaluator it
needs no minimum window, fails a regression quickly and passes a good version."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gates.metrics.evaluator import measure
from gates.metrics.measurement import Phase
from gates.metrics.provider import MetricsError, NoData
from gates.metrics.sequential import MIN_REFERENCE, hypotheses, sprt
from gates.metrics.sources import EnvoyStreamSource
from gates.metrics.windows import SlotWindows
from turnout.policy import MetricSpec

NOW = 2_000_000.0


def test_sprt_bounds_and_verdicts():
    upper, lower = math.log(0.9 / 0.01), math.log(0.1 / 0.99)
    first = sprt(0, 0, 0.01, 0.5, alpha=0.01, beta=0.1)
    assert first.phase is Phase.INCONCLUSIVE and first.llr == 0
    assert (first.upper, first.lower) == pytest.approx((upper, lower))
    # Each bad request adds log(p1/p0), each good one log((1-p1)/(1-p0)).
    two_bad = sprt(2, 2, 0.01, 0.5, alpha=0.01, beta=0.1)
    assert two_bad.llr == pytest.approx(2 * math.log(50)) and two_bad.phase is Phase.FAILED
    one_bad = sprt(1, 1, 0.01, 0.5, alpha=0.01, beta=0.1)
    assert one_bad.phase is Phase.INCONCLUSIVE  # log(50) = 3.9 < log(90) = 4.5
    good = sprt(0, 4, 0.01, 0.5, alpha=0.01, beta=0.1)
    assert good.phase is Phase.SUCCESSFUL  # 4 x log(0.5/0.99) = -2.7 < -2.3
    assert "not enough evidence yet" in one_bad.message and "2/2 bad" in two_bad.message
    with pytest.raises(ValueError):
        sprt(0, 1, 0.5, 0.5, alpha=0.01, beta=0.1)


@pytest.mark.parametrize("builtin, share, error_max, expected", [
    ("error_rate", 0.0, 0.01, (0.001, 0.01)),
    ("error_rate", 0.02, 0.01, (0.02, 0.04)),
    ("p50_latency_ms", 0.0, None, (0.002, 0.5)),
    ("p99_latency_ms", 0.001, None, (0.002, 0.01)),
    ("p99_latency_ms", 0.3, None, (0.3, 0.6)),
])
def test_hypotheses(builtin, share, error_max, expected):
    assert hypotheses(builtin, share, error_max=error_max) == pytest.approx(expected)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def windows_with(candidate_ms: float, n_candidate: int, *, errors: int = 0) -> SlotWindows:
    rng = np.random.default_rng(7)
    w = SlotWindows(clock=Clock())
    active = rng.lognormal(np.log(1.0), 0.3, 500)
    w.record_many("blue", at=np.full(500, NOW - 1), latency_ms=active,
                  error=np.zeros(500, bool))
    cand = rng.lognormal(np.log(candidate_ms), 0.3, n_candidate)
    w.record_many("green", at=np.full(n_candidate, NOW - 1), latency_ms=cand,
                  error=np.arange(n_candidate) < errors)
    return w


P50 = MetricSpec("p50", builtin="p50_latency_ms", max_ratio=3, min_delta=10, source="envoy",
                 sequential=(0.01, 0.1))
ERRORS = MetricSpec("errors", builtin="error_rate", max=0.05, source="envoy",
                    sequential=(0.01, 0.1))


def run(metric: MetricSpec, w: SlotWindows, requests: float):
    return measure(EnvoyStreamSource(w), metric, candidate="green", active="blue",
                   window_s=4, min_requests=20, candidate_requests=requests, baselines={},
                   now=NOW, step_s=30)


def test_few_requests_are_enough_for_a_clear_regression_and_a_clear_pass():
    slow = run(P50, windows_with(40.0, 3), requests=3)  # below minRequests: still decides
    assert slow.phase is Phase.FAILED, slow.message
    assert slow.value == 1.0 and "3/3 bad" in slow.message
    fine = run(P50, windows_with(1.0, 6), requests=6)
    assert fine.phase is Phase.SUCCESSFUL, fine.message
    unsure = run(P50, windows_with(1.0, 1), requests=1)
    assert unsure.phase is Phase.INCONCLUSIVE, unsure.message


def test_error_rate_sequentially():
    assert run(ERRORS, windows_with(1.0, 40, errors=10), 40).phase is Phase.FAILED
    assert run(ERRORS, windows_with(1.0, 400, errors=0), 400).phase is Phase.SUCCESSFUL


def test_sequential_needs_the_stream():
    class Prom:
        def query_value(self, promql: str) -> float:
            return 1.0

    got = measure(Prom(), P50, candidate="green", active="blue", window_s=4, min_requests=1,
                  candidate_requests=10, baselines={}, now=NOW)
    assert got.phase is Phase.ERROR and "needs source: envoy" in got.message


def test_rounds_gathering_evidence_do_not_pause_the_rollout():
    from gates.metrics.evaluator import GateRound, Limits, assess
    from gates.metrics.measurement import Measurement

    limits = Limits(failure_limit=1, inconclusive_limit=2, consecutive_error_limit=3)
    gathering = GateRound(NOW, 4, (Measurement("p50", Phase.INCONCLUSIVE, "SPRT: ...",
                                               gathering=True),))
    missing = GateRound(NOW, 4, (Measurement("p99", Phase.INCONCLUSIVE, "no data"),))
    assert assess([gathering] * 10, limits).decision.value == "wait"
    assert assess([missing] * 3, limits).decision.value == "hold"
    mixed = GateRound(NOW, 4, (*gathering.measurements, *missing.measurements))
    assert assess([mixed] * 3, limits).decision.value == "hold"
    no_candidate = run(P50, SlotWindows(clock=Clock()), requests=0)
    assert no_candidate.phase is Phase.INCONCLUSIVE and no_candidate.gathering


def test_no_decision_before_the_active_slot_is_a_reference():
    w = SlotWindows(clock=Clock())
    w.record_many("blue", at=np.full(10, NOW - 1), latency_ms=np.full(10, 1.0),
                  error=np.zeros(10, bool))
    w.record_many("green", at=np.full(5, NOW - 1), latency_ms=np.full(5, 40.0),
                  error=np.zeros(5, bool))
    got = run(P50, w, requests=5)
    assert got.phase is Phase.INCONCLUSIVE and got.gathering
    assert "10 requests on the active slot blue; the reference needs 50" in got.message


def test_sequential_measurement_fields_exactly():
    w = windows_with(40.0, 3)
    got = run(P50, w, requests=3)
    outcome = EnvoyStreamSource(w).sequential(
        "p50_latency_ms", candidate="green", active="blue", window_s=30, max_ratio=3,
        min_delta=10, error_max=None, alpha=0.01, beta=0.1)
    assert (got.phase, got.message, got.value, got.ratio, got.gathering) == \
        (Phase.FAILED, outcome.message, 1.0, outcome.llr, False)
    fine = run(P50, windows_with(1.0, 6), requests=6)
    assert fine.gathering is False and fine.ratio is not None and fine.ratio < 0


def test_the_ratio_sets_the_latency_limit():
    # 5 ms against a 1 ms median: 5x, but only 4 ms slower. maxRatio 3 (no delta) fails
    # it; maxRatio 10 passes it: the ratio reaches the test.
    w = windows_with(5.0, 12)
    tight = MetricSpec("p50", builtin="p50_latency_ms", max_ratio=3, source="envoy",
                       sequential=(0.01, 0.1))
    loose = MetricSpec("p50", builtin="p50_latency_ms", max_ratio=10, source="envoy",
                       sequential=(0.01, 0.1))
    assert run(tight, w, 12).phase is Phase.FAILED
    assert run(loose, w, 12).phase is Phase.SUCCESSFUL


def test_sequential_source_errors_and_misuse():
    from gates.metrics.provider import MetricsError

    class Broken:
        def sequential(self, *args, **kwargs):
            raise MetricsError("windows gone")

        def value(self, *args, **kwargs):
            return 1.0

    got = measure(Broken(), P50, candidate="green", active="blue", window_s=4,
                  min_requests=1, candidate_requests=10, baselines={}, now=NOW)
    assert (got.phase, got.message) == (Phase.ERROR, "query failed: windows gone")
    custom = MetricSpec("q", query="up", max=1, source="envoy", sequential=(0.01, 0.1))
    got = measure(Broken(), custom, candidate="green", active="blue", window_s=4,
                  min_requests=1, candidate_requests=10, baselines={}, now=NOW)
    assert (got.phase, got.message) == \
        (Phase.ERROR, "a sequential test needs source: envoy and a builtin")


def _fill(w: SlotWindows, slot: str, latencies: list[float], errors: int = 0) -> None:
    n = len(latencies)
    w.record_many(slot, at=np.full(n, NOW - 1), latency_ms=np.array(latencies, float),
                  error=np.arange(n) < errors)


def _sprt(w: SlotWindows, builtin: str, **kw):
    args = dict(candidate="green", active="blue", window_s=30, max_ratio=None,
                min_delta=0.0, error_max=None, alpha=0.01, beta=0.1)
    return EnvoyStreamSource(w).sequential(builtin, **(args | kw))


def test_the_reference_is_laplaces_estimate_of_the_active_slots_bad_share():
    w = SlotWindows(clock=Clock())
    _fill(w, "blue", [1.0] * 98, errors=1)  # (1 + 1) / (98 + 2) = 0.02
    _fill(w, "green", [1.0] * 1, errors=0)  # one request is enough to be tested
    got = _sprt(w, "error_rate")
    assert (got.bad, got.requests, got.p0, got.p1) == (0, 1, pytest.approx(0.02),
                                                       pytest.approx(0.04))
    assert _sprt(w, "error_rate", error_max=0.3).p1 == pytest.approx(0.3)


def test_the_reference_needs_exactly_min_reference_active_requests():
    w = SlotWindows(clock=Clock())
    _fill(w, "blue", [1.0] * (MIN_REFERENCE - 1))
    _fill(w, "green", [1.0] * 3)
    with pytest.raises(NoData, match=f"^{MIN_REFERENCE - 1} requests on the active slot blue; "
                                     f"the reference needs {MIN_REFERENCE}$"):
        _sprt(w, "error_rate")
    _fill(w, "blue", [1.0])
    assert _sprt(w, "error_rate").requests == 3


def test_no_candidate_request_or_no_active_latency_is_no_data():
    w = SlotWindows(clock=Clock())
    with pytest.raises(NoData, match=r"^no requests to the active slot blue yet$"):
        _sprt(w, "p99_latency_ms", max_ratio=2.0)
    _fill(w, "blue", [1.0] * MIN_REFERENCE)
    with pytest.raises(NoData, match=r"^no requests to green yet$"):
        _sprt(w, "error_rate")
    with pytest.raises(MetricsError, match=r"^no sequential test for requests_rps$"):
        _sprt(w, "requests_rps")


def test_the_latency_limit_is_the_larger_of_ratio_and_delta():
    # Active median in the bucket holding 10 ms; the candidate's requests at 14 ms (just
    # above the 10 ms bucket) and at 30 ms.
    w = SlotWindows(clock=Clock())
    _fill(w, "blue", [10.0] * MIN_REFERENCE)
    _fill(w, "green", [14.0] * 4 + [30.0] * 2)
    reference = w.quantile("blue", 0.5, 30)
    assert 7.0 < reference <= 10.0
    # No ratio, no delta: the limit is the reference itself; all six are slower.
    assert _sprt(w, "p50_latency_ms").bad == 6
    # Ratio 2: limit 2 x reference, between the 14 ms and 30 ms buckets.
    assert _sprt(w, "p50_latency_ms", max_ratio=2.0).bad == 2
    # A delta larger than what the ratio adds wins: reference + 25 is above 30 ms's bucket.
    assert _sprt(w, "p50_latency_ms", max_ratio=2.0, min_delta=25.0).bad == 0
    # A small delta does not lower the ratio's limit.
    assert _sprt(w, "p50_latency_ms", max_ratio=2.0, min_delta=1.0).bad == 2


def test_the_log_likelihood_ratio_is_walds():
    got = sprt(2, 100, 0.01, 0.05, 0.01, 0.1)
    assert got.llr == pytest.approx(2 * math.log(5) + 98 * math.log(0.95 / 0.99))
    assert (got.upper, got.lower) == (pytest.approx(math.log(0.9 / 0.01)),
                                      pytest.approx(math.log(0.1 / 0.99)))


@pytest.mark.parametrize("p0, p1", [(0.0, 0.5), (0.2, 1.0), (0.5, 0.5), (0.6, 1.5)])
def test_hypotheses_outside_zero_to_one_are_refused(p0, p1):
    with pytest.raises(ValueError, match=rf"^need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}$"):
        sprt(1, 10, p0, p1, 0.01, 0.1)


def test_the_alternative_stays_below_one():
    assert hypotheses("error_rate", 0.6, error_max=None) == (0.6, 0.999)
    assert hypotheses("p50_latency_ms", 0.7, error_max=None) == (0.7, 0.999)
