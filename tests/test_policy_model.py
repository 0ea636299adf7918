"""From a checked policy document to the typed Policy: what a minimal document defaults to
(the documented defaults, nothing else), and every field of a full document landing where
it belongs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gates.validation.settings import (
    AdversarialSettings,
    Check,
    LatencySettings,
    OutputTolerance,
    ParitySettings,
    ValidationSettings,
)
from triton_slots.tensors import InputHint
from turnout.policy import load_text
from turnout.policy.model import (
    ConvergenceSettings,
    GateSettings,
    MetricSpec,
    Policy,
    RollbackSettings,
    Step,
    build_policy,
    parse_duration,
    resolve_samples,
)

MINIMAL = """
apiVersion: turnout/v1
kind: Rollout
metadata: {name: small}
spec:
  model: ranker:v3
"""

FULL = """
apiVersion: turnout/v1
kind: Rollout
metadata: {name: full}
spec:
  model: ranker:v4
  strategy:
    steps:
      - {weight: 5, bake: 90s}
      - {weight: 60, bake: 2m, approval: true}
      - {weight: 100}
  validation:
    enabled: false
    checks: [parity]
    samples: data/samples.npz
    inputs:
      tokens: {shape: [16], range: [0, 1000]}
      mask: {range: [0, 2]}
    latency: {concurrency: 2, requests: 40, rounds: 5, batchSizes: [1, 4],
              p99BudgetMs: 80, maxP99Ratio: 1.5, minThroughputRatio: 0.5, dryRun: true}
    parity: {samples: 64, batch: 8, seed: 3, maxAbsDiff: 0.5, maxRelDiff: 0.1,
             minTop1Agreement: 0.9, dryRun: true,
             outputs: {scores: {maxAbsDiff: 0.01, maxRelDiff: 0.2, classScores: true},
                       ids: {}}}
    adversarial: {timeout: 3s, dryRun: true}
  gates:
    interval: 2s
    window: 8s
    minRequests: 7
    failureLimit: 3
    inconclusiveLimit: 9
    consecutiveErrorLimit: 2
    onMetricErrors: rollback
    metrics:
      - {name: e, builtin: error_rate, max: 0.05, min: 0.001, dryRun: true}
      - {name: l, builtin: p99_latency_ms, maxRatio: 1.5, minRatio: 0.5, minDelta: 3,
         source: envoy, sequential: {alpha: 0.02, beta: 0.2}}
      - {name: s, builtin: error_rate, max: 0.01, source: envoy, sequential: {}}
      - {name: q, query: 'sum(up{slot="$slot"})', min: 1}
  rollback: {automatic: false, keepWarm: 5m, onCandidateUnhealthy: pause}
  convergence: {minAcked: 95%, timeout: 4s}
  progressDeadline: 45m
  notifications:
    - {url: "http://127.0.0.1:9/hook", events: [rolled_back]}
"""


def test_a_minimal_document_takes_every_documented_default():
    policy = load_text(MINIMAL, "small.yaml")
    assert policy == Policy(
        name="small", model="ranker:v3",
        steps=(Step(10), Step(25), Step(50), Step(100)),
        validation_enabled=True, validation=ValidationSettings(), gates=GateSettings(),
        rollback=RollbackSettings(), convergence=ConvergenceSettings(),
        progress_deadline_s=1800.0, notifications=(), source="small.yaml")
    assert policy.steps[0].bake_s == 60.0 and not policy.steps[0].approval
    assert policy.model_ref == ("ranker", "v3")


def test_every_field_of_a_full_document_lands_where_it_belongs(tmp_path):
    source = str(tmp_path / "full.yaml")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "samples.npz").write_bytes(b"")
    policy = load_text(FULL, source)
    assert policy.steps == (Step(5, 90.0), Step(60, 120.0, True), Step(100, 60.0))
    assert policy.validation_enabled is False
    assert policy.validation == ValidationSettings(
        latency=LatencySettings(concurrency=2, requests=40, rounds=5, batch_sizes=(1, 4),
                                p99_budget_ms=80, max_p99_ratio=1.5,
                                min_throughput_ratio=0.5, dry_run=True),
        parity=ParitySettings(samples=64, batch=8, seed=3, max_abs_diff=0.5,
                              max_rel_diff=0.1, min_top1_agreement=0.9, dry_run=True,
                              outputs={"scores": OutputTolerance(0.01, 0.2, True),
                                       "ids": OutputTolerance()}),
        adversarial=AdversarialSettings(timeout_s=3.0, dry_run=True),
        checks=(Check.PARITY,),
        samples=str(tmp_path.resolve() / "data" / "samples.npz"),
        inputs={"tokens": InputHint((16,), 0, 1000), "mask": InputHint(None, 0, 2)})
    assert policy.gates == GateSettings(
        interval_s=2.0, window_s=8.0, min_requests=7, failure_limit=3, inconclusive_limit=9,
        consecutive_error_limit=2, on_metric_errors="rollback", metrics=(
            MetricSpec("e", builtin="error_rate", max=0.05, min=0.001, dry_run=True),
            MetricSpec("l", builtin="p99_latency_ms", max_ratio=1.5, min_ratio=0.5,
                       min_delta=3, source="envoy", sequential=(0.02, 0.2)),
            MetricSpec("s", builtin="error_rate", max=0.01, source="envoy",
                       sequential=(0.01, 0.1)),
            MetricSpec("q", query='sum(up{slot="$slot"})', min=1)))
    assert policy.rollback == RollbackSettings(automatic=False, keep_warm_s=300.0,
                                               on_candidate_unhealthy="pause")
    assert policy.convergence == ConvergenceSettings(min_acked=0.95, timeout_s=4.0)
    assert policy.progress_deadline_s == 2700.0
    assert policy.notifications == ({"url": "http://127.0.0.1:9/hook",
                                     "events": ["rolled_back"]},)
    assert (policy.name, policy.model, policy.source) == ("full", "ranker:v4", source)
    assert policy.document["spec"]["model"] == "ranker:v4"
    assert build_policy(policy.document, source) == policy


def test_a_policy_without_validation_settings_keeps_the_suites_defaults():
    doc = load_text(MINIMAL).document
    doc["spec"]["validation"] = {"latency": {}, "parity": {}, "adversarial": {}}
    assert build_policy(doc).validation == ValidationSettings()
    assert build_policy(doc).source == ""  # no file named: none made up


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("30s", 30.0), ("1.5m", 90.0),
                                           ("2h", 7200.0), ("0s", 0.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "s", "1d", "-1s", " 5s", "5s ", "5 s", "1.s"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    assert str(raised.value) == f"{text!r} is not a duration like 30s, 5m or 1h"


def test_thresholds_read_as_written():
    assert MetricSpec("a", max=0.01).thresholds() == "<=0.01"
    assert MetricSpec("a", min=5, max=7).thresholds() == "<=7 >=5"
    assert MetricSpec("a", max_ratio=2.5, min_delta=5).thresholds() == "ratio<=2.5 delta>5"
    assert MetricSpec("a", min_ratio=0.5).thresholds() == "ratio>=0.5"
    assert MetricSpec("a", max=1, min_delta=5).thresholds() == "<=1"  # delta: ratios only
    assert MetricSpec("a", max_ratio=2).relative and MetricSpec("a", min_ratio=1).relative
    assert not MetricSpec("a", max=1).relative


def test_minimum_duration_counts_each_step_at_least_one_interval():
    policy = load_text(FULL)
    assert policy.minimum_duration_s() == 90.0 + 120.0 + 60.0
    fast = load_text(MINIMAL)
    assert fast.minimum_duration_s() == 4 * 60.0
    doc = load_text(MINIMAL).document
    doc["spec"]["strategy"] = {"steps": [{"weight": 50, "bake": "1s"}, {"weight": 100}]}
    assert build_policy(doc).minimum_duration_s() == 5.0 + 60.0


def test_samples_are_found_beside_the_policy_file(tmp_path):
    policy_file = str(tmp_path / "p.yaml")
    assert resolve_samples(None, policy_file) is None
    assert resolve_samples("", policy_file) is None
    assert resolve_samples("s.npz", policy_file) == str(tmp_path.resolve() / "s.npz")
    assert resolve_samples("/abs/s.npz", policy_file) == "/abs/s.npz"
    assert resolve_samples("s.npz", "<stdin>") == "s.npz"  # no file: as written
    assert resolve_samples("s.npz", "") == "s.npz"
    assert Path(resolve_samples("../s.npz", policy_file)) == tmp_path.resolve() / ".." / "s.npz"
