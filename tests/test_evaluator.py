"""Gate evaluation: no data, NaN, errors and too few requests are never Successful."""

from __future__ import annotations

from gates.metrics.evaluator import GateRound, Limits, assess, measure_round
from gates.metrics.measurement import Measurement, Phase
from gates.metrics.provider import MetricsError, NoData
from turnout.policy import MetricSpec


class FakeProvider:
    """Answers by slot and by whether the query is the request count."""

    def __init__(self, values: dict[tuple[str, str], object]) -> None:
        self.values = values
        self.queries: list[str] = []

    def query_value(self, promql: str) -> float:
        self.queries.append(promql)
        kind = "requests" if "upstream_rq_total" in promql and "/" not in promql else "metric"
        slot = "green" if "green" in promql else "blue"
        value = self.values.get((slot, kind))
        if isinstance(value, Exception):
            raise value
        if value is None:
            raise NoData("no series")
        return float(value)  # type: ignore[arg-type]

    def is_online(self) -> bool:
        return True


ABS = MetricSpec("errors", builtin="error_rate", max=0.01)
REL = MetricSpec("p99", builtin="p99_latency_ms", max_ratio=2.0)


def one(provider, metric=ABS, baselines=None, min_requests=10) -> Measurement:
    gate_round = measure_round(provider, [metric], candidate="green", active="blue",
                               window_s=10, min_requests=min_requests,
                               baselines={} if baselines is None else baselines)
    return gate_round.measurements[0]


def test_pass_and_fail_on_absolute_threshold():
    ok = one(FakeProvider({("green", "requests"): 50, ("green", "metric"): 0.001}))
    assert ok.phase is Phase.SUCCESSFUL and ok.value == 0.001
    bad = one(FakeProvider({("green", "requests"): 50, ("green", "metric"): 0.2}))
    assert bad.phase is Phase.FAILED and "> max" in bad.message


def test_too_few_requests_no_data_and_errors_are_never_successful():
    assert one(FakeProvider({("green", "requests"): 3, ("green", "metric"): 0.0})).phase \
        is Phase.INCONCLUSIVE
    assert one(FakeProvider({("green", "requests"): 50})).phase is Phase.INCONCLUSIVE
    down = FakeProvider({("green", "requests"): MetricsError("connection refused")})
    m = one(down)
    assert m.phase is Phase.ERROR and "connection refused" in m.message


def test_relative_uses_active_slot_then_the_last_good_baseline():
    baselines: dict[str, float] = {}
    provider = FakeProvider({("green", "requests"): 50, ("green", "metric"): 9.0,
                             ("blue", "requests"): 500, ("blue", "metric"): 4.0})
    m = one(provider, REL, baselines)
    assert m.phase is Phase.FAILED and m.ratio == 2.25 and baselines == {"p99": 4.0}
    # At 100 % the active slot has no traffic: the last good baseline is used.
    provider = FakeProvider({("green", "requests"): 50, ("green", "metric"): 5.0,
                             ("blue", "requests"): 0})
    m = one(provider, REL, baselines)
    assert m.phase is Phase.SUCCESSFUL and m.baseline == 4.0
    # No traffic on the active slot and no baseline yet: inconclusive.
    assert one(provider, REL, {}).phase is Phase.INCONCLUSIVE


def test_dry_run_metrics_never_decide():
    provider = FakeProvider({("green", "requests"): 50, ("green", "metric"): 99.0})
    shadow = MetricSpec("shadow", builtin="error_rate", max=0.01, dry_run=True)
    gate_round = measure_round(provider, [shadow], candidate="green", active="blue",
                               window_s=10, min_requests=1, baselines={})
    assert gate_round.measurements[0].phase is Phase.FAILED
    assert gate_round.phase is Phase.INCONCLUSIVE  # nothing deciding: not a pass either


def _round(phase: Phase) -> GateRound:
    return GateRound(0.0, 10.0, (Measurement("m", phase, str(phase)),))


def test_limits():
    limits = Limits(failure_limit=1, inconclusive_limit=2, consecutive_error_limit=1)
    assert assess([_round(Phase.FAILED)], limits).decision == "wait"
    assert assess([_round(Phase.FAILED)] * 2, limits).decision == "failed"
    assert assess([_round(Phase.ERROR)] * 2, limits).decision == "hold"
    assert assess([_round(Phase.ERROR), _round(Phase.SUCCESSFUL), _round(Phase.ERROR)],
                  limits).decision == "wait"
    assert assess([_round(Phase.INCONCLUSIVE)] * 3, limits).decision == "hold"
    assert assess([_round(Phase.INCONCLUSIVE), _round(Phase.SUCCESSFUL)],
                  limits).decision == "pass"
    # Only rounds from Successful pass: every errored measurement never adds up to success.
    assert assess([], limits).decision == "wait"


def test_nan_inf_and_empty_from_any_source_are_never_successful():
    """Guarded in the evaluator itself, whatever the provider filters or not."""
    from gates.metrics.evaluator import measure

    class Raw:  # a source that returns what it got, unfiltered
        def __init__(self, value: float) -> None:
            self.value = value

        def query_value(self, promql: str) -> float:
            return self.value

    for value in (float("nan"), float("inf"), float("-inf")):
        for metric in (ABS, REL, MetricSpec("tput", builtin="throughput_rps", min=1)):
            m = measure(Raw(value), metric, candidate="green", active="blue", window_s=5,
                        min_requests=1, candidate_requests=10, baselines={})
            assert m.phase is not Phase.SUCCESSFUL, (value, metric.name, m)
            assert m.phase in (Phase.INCONCLUSIVE, Phase.FAILED)
    nan = measure(Raw(float("nan")), ABS, candidate="green", active="blue", window_s=5,
                  min_requests=1, candidate_requests=10, baselines={})
    assert nan.phase is Phase.INCONCLUSIVE and "NaN" in nan.message
    empty = one(FakeProvider({("green", "requests"): 50}))  # the metric has no series
    assert empty.phase is Phase.INCONCLUSIVE and "no data" in empty.message


def test_a_nan_baseline_is_not_used():
    from gates.metrics.evaluator import measure

    class Split:
        def query_value(self, promql: str) -> float:
            if "upstream_rq_total" in promql and "/" not in promql:
                return 100.0
            return float("nan") if "blue" in promql else 5.0

    baselines: dict[str, float] = {}
    m = measure(Split(), REL, candidate="green", active="blue", window_s=5, min_requests=1,
                candidate_requests=100, baselines=baselines)
    assert m.phase is Phase.INCONCLUSIVE and "p99" not in baselines and \
        "no baseline" in m.message
    baselines["p99"] = 2.0  # a good earlier baseline is used instead
    m = measure(Split(), REL, candidate="green", active="blue", window_s=5, min_requests=1,
                candidate_requests=100, baselines=baselines)
    assert m.phase is Phase.FAILED and m.ratio == 2.5
