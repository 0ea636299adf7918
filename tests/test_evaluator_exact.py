"""Every branch of the gate evaluator, checked to the field: phase, message, value,
baseline, ratio, requests, threshold, dry run and time (what operators read in the audit
log and `turnout status`)."""

from __future__ import annotations

import math

import pytest

from gates.metrics.evaluator import Decision, GateRound, Limits, assess, measure, measure_round
from gates.metrics.measurement import Measurement, Phase
from gates.metrics.provider import MetricsError, NoData
from turnout.policy import MetricSpec

NOW = 1000.0
MAX = MetricSpec("errors", builtin="error_rate", max=0.01)
MIN = MetricSpec("tput", builtin="throughput_rps", min=5)
RATIO = MetricSpec("p99", builtin="p99_latency_ms", max_ratio=2.0)
LOW_RATIO = MetricSpec("rate", builtin="throughput_rps", min_ratio=0.5, dry_run=True)


class Scripted:
    """Answers the request count and the metric per slot; records the queries."""

    def __init__(self, **answers: object) -> None:
        self.answers = answers
        self.queries: list[str] = []

    def query_value(self, promql: str) -> float:
        self.queries.append(promql)
        slot = "green" if 'slot="green"' in promql or "slot_green" in promql else "blue"
        kind = "requests" if promql.startswith("sum(increase(envoy_cluster_upstream_rq_total") \
            else "metric"
        value = self.answers.get(f"{slot}_{kind}")
        if isinstance(value, Exception):
            raise value
        if value is None:
            raise NoData("no series")
        return float(value)  # type: ignore[arg-type]


def run(metric, *, requests=50.0, min_requests=10, baselines=None, **answers) -> Measurement:
    return measure(Scripted(**answers), metric, candidate="green", active="blue",
                   window_s=6, min_requests=min_requests, candidate_requests=requests,
                   baselines={} if baselines is None else baselines, now=NOW)


def expect(metric, phase, message, **fields) -> Measurement:
    return Measurement(metric.name, phase, message, threshold=metric.thresholds(),
                       dry_run=metric.dry_run, at=NOW, requests=fields.pop("requests", 50.0),
                       **fields)


@pytest.mark.parametrize("metric, answers, expected", [
    (MAX, {"green_metric": 0.002}, (Phase.SUCCESSFUL, "0.002 within <=0.01", 0.002)),
    (MAX, {"green_metric": 0.01}, (Phase.SUCCESSFUL, "0.01 within <=0.01", 0.01)),
    (MAX, {"green_metric": 0.25}, (Phase.FAILED, "0.25 > max 0.01", 0.25)),
    (MIN, {"green_metric": 5}, (Phase.SUCCESSFUL, "5 within >=5", 5.0)),
    (MIN, {"green_metric": 4.5}, (Phase.FAILED, "4.5 < min 5", 4.5)),
])
def test_absolute_thresholds(metric, answers, expected):
    phase, message, value = expected
    assert run(metric, **answers) == expect(metric, phase, message, value=value)


def test_ratios_against_the_active_slot():
    baselines: dict[str, float] = {}
    failed = run(RATIO, green_metric=9, blue_requests=40, blue_metric=4, baselines=baselines)
    assert failed == expect(RATIO, Phase.FAILED, "9 is 2.25x active 4 > 2x", value=9.0,
                            baseline=4.0, ratio=2.25)
    assert baselines == {"p99": 4.0}
    ok = run(RATIO, green_metric=8, blue_requests=40, blue_metric=4)
    assert ok == expect(RATIO, Phase.SUCCESSFUL, "8 is 2.00x active 4", value=8.0,
                        baseline=4.0, ratio=2.0)
    low = run(LOW_RATIO, green_metric=1, blue_requests=40, blue_metric=4)
    assert low == expect(LOW_RATIO, Phase.FAILED, "1 is 0.25x active 4 < 0.5x", value=1.0,
                         baseline=4.0, ratio=0.25)


def test_zero_baselines():
    both_zero = run(RATIO, green_metric=0, blue_requests=40, blue_metric=0)
    assert both_zero.phase is Phase.SUCCESSFUL and both_zero.ratio == 1.0
    from_zero = run(RATIO, green_metric=3, blue_requests=40, blue_metric=0)
    assert from_zero.phase is Phase.FAILED and math.isinf(from_zero.ratio)


def test_baseline_from_memory_and_its_absence():
    thin = {"blue_requests": 9, "blue_metric": 100}  # below minRequests: not used
    assert run(RATIO, green_metric=5, baselines={"p99": 4.0}, **thin) == expect(
        RATIO, Phase.SUCCESSFUL, "5 is 1.25x active 4", value=5.0, baseline=4.0, ratio=1.25)
    assert run(RATIO, green_metric=5, **thin) == expect(
        RATIO, Phase.INCONCLUSIVE, "no baseline: active slot blue has too little traffic",
        value=5.0)
    down = run(RATIO, green_metric=5, blue_requests=MetricsError("refused"))
    assert down == expect(RATIO, Phase.ERROR, "baseline query failed: refused", value=5.0)


@pytest.mark.parametrize("requests, min_requests, answers, phase, message", [
    (None, 10, {}, Phase.INCONCLUSIVE, "request count unavailable"),
    (9.0, 10, {"green_metric": 0}, Phase.INCONCLUSIVE,
     "9 requests in window < minRequests 10"),
    (10.0, 10, {"green_metric": MetricsError("timeout")}, Phase.ERROR,
     "query failed: timeout"),
    (10.0, 10, {}, Phase.INCONCLUSIVE, "no data: no series"),
    (10.0, 10, {"green_metric": float("nan")}, Phase.INCONCLUSIVE,
     "no data: the value is NaN"),
    (10.0, 10, {"green_metric": float("inf")}, Phase.INCONCLUSIVE,
     "no usable data: the value is inf"),
])
def test_never_successful_without_a_finite_passing_value(requests, min_requests, answers,
                                                         phase, message):
    result = run(MIN, requests=requests, min_requests=min_requests, **answers)
    assert result == expect(MIN, phase, message, requests=requests)


def test_a_round_whose_request_count_fails_is_all_errors():
    provider = Scripted(green_requests=MetricsError("down"))
    gate_round = measure_round(provider, [MAX, LOW_RATIO], candidate="green", active="blue",
                               window_s=6, min_requests=1, baselines={})
    assert [(m.metric, m.phase, m.message, m.dry_run, m.threshold)
            for m in gate_round.measurements] == [
        ("errors", Phase.ERROR, "query failed: down", False, "<=0.01"),
        ("rate", Phase.ERROR, "query failed: down", True, "ratio>=0.5")]
    assert gate_round.window_s == 6 and gate_round.phase is Phase.ERROR
    none = measure_round(Scripted(), [MAX], candidate="green", active="blue", window_s=6,
                         min_requests=1, baselines={})
    assert none.measurements[0].requests == 0.0  # no series: zero requests, not an error


def test_the_model_narrows_triton_queries():
    provider = Scripted(green_requests=50, green_metric=0.0)
    measure_round(provider, [MAX], candidate="green", active="blue", window_s=6,
                  min_requests=1, baselines={}, model="bert")
    assert any('model=~"bert"' in q for q in provider.queries)
    assert all("[6s]" in q for q in provider.queries)


def _round(*phases: Phase, dry: bool = False) -> GateRound:
    return GateRound(0.0, 6.0, tuple(Measurement(f"m{i}", p, f"{p} said m{i}", dry_run=dry)
                                     for i, p in enumerate(phases)))


def test_assess_counts_and_reasons():
    limits = Limits(failure_limit=0, inconclusive_limit=1, consecutive_error_limit=1)
    failed = assess([_round(Phase.SUCCESSFUL, Phase.FAILED)], limits)
    assert failed.decision is Decision.FAILED and failed.reason == "m1: Failed said m1"
    assert failed.counts == {"rounds": 1, "failed": 1, "inconclusive": 0,
                             "consecutive_errors": 0}
    errors = assess([_round(Phase.ERROR), _round(Phase.ERROR)], limits)
    assert errors.decision is Decision.HOLD
    assert errors.reason == "2 consecutive metric errors (Error said m0)"
    vague = assess([_round(Phase.INCONCLUSIVE)] * 2, limits)
    assert vague.decision is Decision.HOLD
    assert vague.reason == "2 inconclusive rounds (Inconclusive said m0)"
    assert assess([_round(Phase.INCONCLUSIVE)], limits).decision is Decision.WAIT
    passed = assess([_round(Phase.INCONCLUSIVE), _round(Phase.SUCCESSFUL)], limits)
    assert passed.decision is Decision.PASS and passed.reason == ""
    dry = assess([_round(Phase.SUCCESSFUL), _round(Phase.FAILED, dry=True)], limits)
    assert dry.decision is not Decision.FAILED  # a dry-run failure never decides


SLACK = MetricSpec("p99", builtin="p99_latency_ms", max_ratio=2.0, min_delta=5.0)
LOW_SLACK = MetricSpec("rate", builtin="throughput_rps", min_ratio=0.5, min_delta=5.0)


@pytest.mark.parametrize("metric, candidate, active, phase, message", [
    # 4x a 1 ms baseline, but only 3 ms slower: within the absolute slack.
    (SLACK, 4.0, 1.0, Phase.SUCCESSFUL, "4 is 4.00x active 1 (within minDelta 5)"),
    # Exactly at the slack still passes; one past it fails on the ratio.
    (SLACK, 6.0, 1.0, Phase.SUCCESSFUL, "6 is 6.00x active 1 (within minDelta 5)"),
    (SLACK, 6.5, 1.0, Phase.FAILED, "6.5 is 6.50x active 1 > 2x"),
    # Past the slack but within the ratio: the ratio decides.
    (SLACK, 16.0, 10.0, Phase.SUCCESSFUL, "16 is 1.60x active 10"),
    (SLACK, 26.0, 10.0, Phase.FAILED, "26 is 2.60x active 10 > 2x"),
    # A drop is measured by its size too, for minRatio.
    (LOW_SLACK, 2.0, 6.0, Phase.SUCCESSFUL, "2 is 0.33x active 6 (within minDelta 5)"),
    (LOW_SLACK, 2.0, 8.0, Phase.FAILED, "2 is 0.25x active 8 < 0.5x"),
])
def test_min_delta_is_an_absolute_slack_on_ratio_thresholds(metric, candidate, active,
                                                             phase, message):
    got = run(metric, green_metric=candidate, blue_requests=50, blue_metric=active)
    assert (got.phase, got.message, got.value, got.baseline) == \
        (phase, message, candidate, active)
    assert got.threshold == metric.thresholds()
    assert metric.thresholds().endswith("delta>5")


def test_min_delta_does_not_rescue_a_dead_value():
    got = run(SLACK, green_metric=math.inf, blue_requests=50, blue_metric=1.0)
    assert got.phase is not Phase.SUCCESSFUL


def _r(*phases: Phase, at: float = NOW, dry: bool = False) -> GateRound:
    return GateRound(at, 4, tuple(Measurement(f"m{i}", p, f"{p} {at:g}", dry_run=dry)
                                  for i, p in enumerate(phases)))


LIMITS = Limits(failure_limit=1, inconclusive_limit=1, consecutive_error_limit=1)


def test_assess_verdicts_exactly():
    from gates.metrics.evaluator import RoundVerdict

    def counts(rounds, failed=0, inconclusive=0, errors=0):
        return {"rounds": rounds, "failed": failed, "inconclusive": inconclusive,
                "consecutive_errors": errors}

    ok = _r(Phase.SUCCESSFUL)
    assert assess([ok], LIMITS) == RoundVerdict(Decision.PASS, "", counts(1))
    assert assess([], LIMITS) == RoundVerdict(Decision.WAIT, "", counts(0))
    failed = [_r(Phase.FAILED, at=1), _r(Phase.SUCCESSFUL, Phase.FAILED, at=2)]
    assert assess(failed, LIMITS) == RoundVerdict(Decision.FAILED, "m1: Failed 2",
                                                  counts(2, failed=2))
    two = [_r(Phase.FAILED, Phase.FAILED, at=3)] * 2
    assert assess(two, LIMITS).reason == "m0: Failed 3; m1: Failed 3"
    errors = [_r(Phase.SUCCESSFUL, at=1), _r(Phase.ERROR, at=2),
              _r(Phase.INCONCLUSIVE, Phase.ERROR, at=3)]
    assert assess(errors, LIMITS) == RoundVerdict(
        Decision.HOLD, "2 consecutive metric errors (Error 3)", counts(3, errors=2))
    waiting = [_r(Phase.INCONCLUSIVE, at=1), _r(Phase.INCONCLUSIVE, at=2)]
    assert assess(waiting, LIMITS) == RoundVerdict(
        Decision.HOLD, "2 inconclusive rounds (Inconclusive 2)", counts(2, inconclusive=2))
    # Inconclusive earlier, fine now: held, with no detail to quote.
    late = [*waiting, _r(Phase.SUCCESSFUL, at=3)]
    assert assess(late, LIMITS) == RoundVerdict(
        Decision.HOLD, "2 inconclusive rounds ()", counts(3, inconclusive=2))
    assert assess([_r(Phase.INCONCLUSIVE)], LIMITS) == RoundVerdict(
        Decision.WAIT, "", counts(1, inconclusive=1))
