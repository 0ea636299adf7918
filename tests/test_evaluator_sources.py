"""The evaluator's round over its sources: what each measurement carries when a source is
missing or failing, which model and slot each question names, and the baseline's edges."""

from __future__ import annotations

import pytest

from gates.metrics.evaluator import measure_round
from gates.metrics.measurement import Phase
from gates.metrics.provider import MetricsError
from tests.test_stream_source import Recording
from turnout.policy import MetricSpec


def test_error_measurements_carry_the_round_time_and_dry_run():
    metrics = [MetricSpec("shadow", builtin="error_rate", max=0.01, dry_run=True)]
    missing = measure_round(None, metrics, candidate="green", active="blue", window_s=6,
                            min_requests=1, baselines={})
    (m,) = missing.measurements
    assert (m.phase, m.dry_run, m.at) == (Phase.ERROR, True, missing.at)
    failing = Recording({("requests", "green"): MetricsError("down")})
    broken = measure_round(failing, metrics, candidate="green", active="blue", window_s=6,
                           min_requests=1, baselines={})
    (m,) = broken.measurements
    assert (m.phase, m.message, m.dry_run, m.at) == (Phase.ERROR, "query failed: down", True,
                                                     broken.at)


def test_every_question_names_the_model_and_the_measurement_its_round_time():
    source = Recording({("requests", "green"): 50.0, ("requests", "blue"): 50.0,
                      ("p99_latency_ms", "green"): 12.0, ("p99_latency_ms", "blue"): 10.0})
    metrics = [MetricSpec("p99", builtin="p99_latency_ms", max_ratio=2.0)]
    got = measure_round(source, metrics, candidate="green", active="blue", window_s=6,
                        min_requests=10, baselines={}, model="ranker")
    assert {model for *_, model in source.asked} == {"ranker"}
    assert ("requests", "blue", 6, "ranker") in source.asked  # the baseline's traffic
    (m,) = got.measurements
    assert (m.phase, m.baseline, m.at) == (Phase.SUCCESSFUL, 10.0, got.at)
    assert m.ratio == pytest.approx(1.2)


def test_a_baseline_needs_exactly_min_requests_and_a_number():
    metrics = [MetricSpec("p99", builtin="p99_latency_ms", max_ratio=2.0)]
    answers = {("requests", "green"): 10.0, ("requests", "blue"): 10.0,
               ("p99_latency_ms", "green"): 12.0, ("p99_latency_ms", "blue"): 10.0}
    got = measure_round(Recording(answers), metrics, candidate="green", active="blue",
                        window_s=6, min_requests=10, baselines={})
    assert got.measurements[0].baseline == 10.0
    nan = dict(answers)
    nan[("p99_latency_ms", "blue")] = float("nan")
    got = measure_round(Recording(nan), metrics, candidate="green", active="blue", window_s=6,
                        min_requests=10, baselines={})
    assert (got.measurements[0].phase, got.measurements[0].message) == (
        Phase.INCONCLUSIVE, "no baseline: active slot blue has too little traffic")


def test_a_failing_baseline_is_an_error_named_for_its_metric():
    metrics = [MetricSpec("p99", builtin="p99_latency_ms", max_ratio=2.0)]
    answers = {("requests", "green"): 10.0, ("requests", "blue"): MetricsError("timeout"),
               ("p99_latency_ms", "green"): 12.0}
    got = measure_round(Recording(answers), metrics, candidate="green", active="blue",
                        window_s=6, min_requests=10, baselines={})
    (m,) = got.measurements
    assert (m.metric, m.phase, m.message) == ("p99", Phase.ERROR,
                                              "baseline query failed: timeout")


def test_a_ratio_exactly_at_its_minimum_passes():
    metrics = [MetricSpec("tput", builtin="throughput_rps", min_ratio=0.5)]
    answers = {("requests", "green"): 50.0, ("requests", "blue"): 50.0,
               ("throughput_rps", "green"): 5.0, ("throughput_rps", "blue"): 10.0}
    got = measure_round(Recording(answers), metrics, candidate="green", active="blue",
                        window_s=6, min_requests=10, baselines={})
    assert got.measurements[0].phase is Phase.SUCCESSFUL
    answers[("throughput_rps", "green")] = 4.9
    got = measure_round(Recording(answers), metrics, candidate="green", active="blue",
                        window_s=6, min_requests=10, baselines={})
    assert got.measurements[0].phase is Phase.FAILED
