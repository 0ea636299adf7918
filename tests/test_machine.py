"""The rollout state machine as a pure function: (state, event, now) -> (state, actions)."""

from __future__ import annotations

import pytest

from gates.metrics.evaluator import GateRound
from gates.metrics.measurement import Measurement, Phase
from turnout.controller.machine import transition
from turnout.controller.state import (
    Command,
    Deploy,
    DeployFinished,
    GatesMeasured,
    MarkFailed,
    MarkPromoted,
    MarkRolledBack,
    MeasureGates,
    PushWeights,
    RolloutPhase,
    RolloutState,
    Started,
    Tick,
    TransitionError,
    Validate,
    ValidationFinished,
    WeightsPushed,
)
from turnout.policy import load_text

P = RolloutPhase
POLICY = """
apiVersion: turnout/v1
kind: Rollout
metadata: {name: t}
spec:
  model: classifier:v2
  strategy:
    steps:
      - {weight: 10, bake: 10s}
      - {weight: 50, bake: 10s, approval: true}
      - {weight: 100, bake: 10s}
  gates:
    interval: 5s
    window: 30s
    failureLimit: 0
    inconclusiveLimit: 2
    consecutiveErrorLimit: 1
    metrics:
      - {name: errors, builtin: error_rate, max: 0.01}
      - {name: shadow, builtin: throughput_rps, min: 1000, dryRun: true}
  rollback: {keepWarm: 60s}
  progressDeadline: 10m
"""


def new_state(policy: str = POLICY) -> RolloutState:
    doc = load_text(policy).document
    return RolloutState(id="r1", name="t", model="classifier:v2", digest="d" * 64,
                        candidate_slot="green", stable_slot="blue",
                        stable_model="classifier:v1", policy=doc, source="p.yaml",
                        created_at=0.0, deadline_at=600.0)


def run(state, event, now):
    return transition(state, event, now)


def gate(phase: Phase, *, dry_phase: Phase = Phase.FAILED, at: float = 0.0) -> GatesMeasured:
    round_ = GateRound(at, 5.0, (
        Measurement("errors", phase, f"errors {phase}", value=0.0 if phase is Phase.SUCCESSFUL
                    else None),
        Measurement("shadow", dry_phase, "dry run", dry_run=True),
    ))
    return GatesMeasured(round_.as_dict())


def to_baking(now: float = 0.0) -> RolloutState:
    s, actions = run(new_state(), Started(), now)
    assert s.phase is P.DEPLOYING and actions[-1] == Deploy()
    s, actions = run(s, DeployFinished(True, "ok"), now)
    assert s.phase is P.VALIDATING and Validate() in actions
    s, actions = run(s, ValidationFinished(True, "all ok"), now)
    assert s.phase is P.SHIFTING and PushWeights(10) in actions
    assert s.target_weight == 10 and s.applied_weight == 0
    s, actions = run(s, WeightsPushed(10, True, 0.002), now)
    assert s.phase is P.BAKING and s.applied_weight == 10
    return s


def measure(s: RolloutState, now: float) -> RolloutState:
    s, actions = run(s, Tick(), now)
    assert any(isinstance(a, MeasureGates) for a in actions), (s.phase, actions)
    return s


def test_happy_path_with_approval_and_promotion():
    s = to_baking(0.0)
    s, actions = run(s, Tick(), 1.0)
    assert actions == []  # not yet time to measure
    s = measure(s, 5.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL), 5.0)
    assert s.phase is P.BAKING  # bake (10 s) not done: a dry-run failure decides nothing
    s = measure(s, 10.0)
    s, actions = run(s, gate(Phase.SUCCESSFUL), 10.0)
    assert s.phase is P.AWAITING_APPROVAL and s.step == 1
    assert not any(isinstance(a, PushWeights) for a in actions)
    with pytest.raises(TransitionError):
        run(s, Command("resume", "sre"), 11.0)
    s, actions = run(s, Command("promote", "sre"), 12.0)
    assert s.phase is P.SHIFTING and PushWeights(50) in actions
    s, _ = run(s, WeightsPushed(50, True, 0.002), 12.0)
    s = measure(s, 17.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL), 22.0)
    assert s.phase is P.SHIFTING and s.target_weight == 100
    s, _ = run(s, WeightsPushed(100, True, 0.002), 22.0)
    s = measure(s, 32.0)
    s, actions = run(s, gate(Phase.SUCCESSFUL), 32.0)
    assert s.phase is P.PROMOTED and MarkPromoted() in actions
    assert s.keep_warm_until == 92.0


def test_gate_failure_rolls_back_and_records_timing():
    s = measure(to_baking(), 5.0)
    s, actions = run(s, gate(Phase.FAILED), 5.0)
    assert s.phase is P.ROLLING_BACK and PushWeights(0) in actions
    assert s.first_failure_at == 5.0 and s.rollback_decided_at == 5.0
    assert "errors" in s.reason
    why = s.reason
    s, actions = run(s, WeightsPushed(0, True, 0.001), 5.1)
    assert s.phase is P.ROLLED_BACK and s.applied_weight == 0
    assert [a for a in actions if isinstance(a, MarkRolledBack | MarkFailed)] == [
        MarkRolledBack(f"rolled_back by a gate: {why}")]
    assert s.rollback_acked_at == 5.1


def test_rollback_push_is_retried_until_acked():
    s = measure(to_baking(), 5.0)
    s, _ = run(s, gate(Phase.FAILED), 5.0)
    s, _ = run(s, WeightsPushed(0, False, 10.0, "envoy-1: timeout"), 15.0)
    assert s.phase is P.ROLLING_BACK
    s, actions = run(s, Tick(), 15.5)
    assert PushWeights(0) in actions


def test_missing_data_holds_and_never_promotes():
    s = to_baking()
    for index, now in enumerate((5.0, 10.0, 15.0)):
        s = measure(s, now)
        s, actions = run(s, gate(Phase.INCONCLUSIVE), now)
        assert not any(isinstance(a, PushWeights) for a in actions)
        assert s.phase is (P.BAKING if index < 2 else P.PAUSED)
    assert "inconclusive" in s.reason
    assert s.applied_weight == 10


def test_metric_errors_hold_after_the_consecutive_limit():
    s = to_baking()
    for now in (5.0, 10.0):
        s = measure(s, now)
        s, _ = run(s, gate(Phase.ERROR), now)
    assert s.phase is P.PAUSED and "consecutive metric errors" in s.reason
    s, _ = run(s, Command("resume", "sre"), 20.0)
    assert s.phase is P.BAKING and s.rounds == [] and s.step_entered_at == 20.0


def test_unacked_push_pauses_and_resume_pushes_again():
    s, _ = run(new_state(), Started(), 0)
    s, _ = run(s, DeployFinished(True, "ok"), 0)
    s, _ = run(s, ValidationFinished(True, "ok"), 0)
    s, _ = run(s, WeightsPushed(10, False, 10.0, "envoy-2: nacked"), 10.0)
    assert s.phase is P.PAUSED and "envoy-2" in s.reason
    s, actions = run(s, Command("resume", "sre"), 11.0)
    assert s.phase is P.SHIFTING and PushWeights(10) in actions


def test_failed_validation_or_deploy_never_moves_traffic():
    s, _ = run(new_state(), Started(), 0)
    failed, actions = run(s, DeployFinished(False, "load failed"), 1)
    assert failed.phase is P.FAILED and not any(isinstance(a, PushWeights) for a in actions)
    s, _ = run(s, DeployFinished(True, "ok"), 1)
    s, actions = run(s, ValidationFinished(False, "parity: NaN"), 2)
    assert s.phase is P.FAILED and s.target_weight == 0
    assert not any(isinstance(a, PushWeights) for a in actions)


def test_deadline_rolls_back():
    s = to_baking()
    s, _ = run(s, Tick(), 600.0)
    assert s.phase is P.ROLLING_BACK and "deadline" in s.reason


def test_abort_promote_full_and_rollback_after_promotion():
    s = to_baking()
    aborted, actions = run(s, Command("abort", "sre"), 3.0)
    assert aborted.phase is P.ROLLING_BACK and PushWeights(0) in actions
    aborted, _ = run(aborted, WeightsPushed(0, True, 0.001), 3.1)
    assert aborted.phase is P.ABORTED
    with pytest.raises(TransitionError):
        run(aborted, Command("pause", "sre"), 4.0)

    s, actions = run(s, Command("promote", "sre", full=True), 3.0)
    assert s.phase is P.SHIFTING and PushWeights(100) in actions  # approval skipped
    s, actions = run(s, WeightsPushed(100, True, 0.001), 3.1)
    assert s.phase is P.PROMOTED
    back, actions = run(s, Command("rollback", "sre"), 30.0)
    assert back.phase is P.ROLLING_BACK and PushWeights(0) in actions
    with pytest.raises(TransitionError, match="keep-warm"):
        run(s, Command("rollback", "sre"), 3.1 + 61.0)


def test_pause_stops_measuring():
    s = to_baking()
    s, _ = run(s, Command("pause", "sre"), 1.0)
    assert s.phase is P.PAUSED
    s, actions = run(s, Tick(), 100.0)
    assert actions == [] and s.phase is P.PAUSED


def test_a_crashed_worker_becomes_a_failure_not_a_hang():
    from turnout.controller.driver import _failure_event

    s, _ = run(new_state(), Started(), 0)
    event = _failure_event(s, Deploy(), "StageTransitionError: active to candidate")
    failed, _ = run(s, event, 1)
    assert failed.phase is P.FAILED and "StageTransitionError" in failed.reason
    s = to_baking()
    s = measure(s, 5.0)
    event = _failure_event(s, MeasureGates(5.0), "boom")
    s, _ = run(s, event, 5.0)
    assert s.phase is P.BAKING and s.rounds[-1]["phase"] == "Error"


def test_automatic_off_pauses_instead_of_rolling_back():
    manual = POLICY.replace("rollback: {keepWarm: 60s}",
                            "rollback: {keepWarm: 60s, automatic: false}")
    s = new_state(manual)
    s, _ = run(s, Started(), 0)
    s, _ = run(s, DeployFinished(True, "ok"), 0)
    s, _ = run(s, ValidationFinished(True, "ok"), 0)
    s, _ = run(s, WeightsPushed(10, True, 0.001), 0)
    s = measure(s, 5.0)
    s, actions = run(s, gate(Phase.FAILED), 5.1)
    assert s.phase is P.PAUSED and "automatic rollback off" in s.reason
    assert not any(isinstance(a, PushWeights) for a in actions)
    assert s.applied_weight == 10  # traffic stays where it was until an operator acts


def test_metric_errors_roll_back_when_the_policy_says_so():
    strict = POLICY.replace("consecutiveErrorLimit: 1", "consecutiveErrorLimit: 1\n"
                            "    onMetricErrors: rollback")
    s = new_state(strict)
    s, _ = run(s, Started(), 0)
    s, _ = run(s, DeployFinished(True, "ok"), 0)
    s, _ = run(s, ValidationFinished(True, "ok"), 0)
    s, _ = run(s, WeightsPushed(10, True, 0.001), 0)
    for at in (5.0, 10.2):
        s = measure(s, at)
        s, actions = run(s, gate(Phase.ERROR), at + 0.1)
    assert s.phase is P.ROLLING_BACK and "policy: rollback" in s.reason
    assert PushWeights(0) in actions


def test_late_and_stale_answers_change_nothing():
    s = to_baking(0.0)
    before = s
    for event in (WeightsPushed(50, True, 0.001),  # an answer to a push never made
                  WeightsPushed(10, False, 0.001),  # a late failure of the step's push
                  DeployFinished(False, "late"), ValidationFinished(False, "late"),
                  gate(Phase.FAILED)):  # a round nobody asked for (not measuring)
        s, actions = run(s, event, 1.0)
        assert s == before and actions == [], event


def test_abort_before_traffic_second_rollback_and_commands_after_the_end():
    s, _ = run(new_state(), Started(), 0)
    s, actions = run(s, Command("abort", "sre"), 1)
    assert s.phase is P.ABORTED and not any(isinstance(a, PushWeights) for a in actions)
    with pytest.raises(TransitionError, match="nothing to pause"):
        run(s, Command("pause", "sre"), 2)
    s = to_baking(0.0)
    s, _ = run(s, Command("rollback", "sre"), 1)
    with pytest.raises(TransitionError, match="already rolling back"):
        run(s, Command("rollback", "sre"), 2)
    with pytest.raises(TransitionError, match="unknown command 'explode'"):
        Command("explode", "sre")


def _notes(actions) -> list[tuple[str, str, str]]:
    from turnout.controller.state import Note

    return [(a.kind, a.actor, a.message) for a in actions if isinstance(a, Note)]


def test_promote_cuts_a_bake_short_and_the_next_step_still_waits_for_approval():
    s = to_baking(0.0)
    s, actions = run(s, Command("promote", "alice"), 1.0)
    # Step 2 needs approval: cutting step 1 short does not give it (issue 29, finding 1).
    assert s.phase is P.AWAITING_APPROVAL and s.step == 1 and s.approved_step == -1
    assert not any(isinstance(a, PushWeights) for a in actions) and s.target_weight == 10
    assert _notes(actions) == [
        ("command", "alice", "step 1 cut short by alice"),
        ("transition", "alice", "baking -> awaiting_approval: step 2/3 (50%) needs approval "
                                "(`turnout promote`)")]
    # The approval is a second promote, its own audit entry, by whoever gives it.
    s, actions = run(s, Command("promote", "bob"), 2.0)
    assert s.phase is P.SHIFTING and s.approved_step == 1 and PushWeights(50) in actions
    assert _notes(actions)[0] == ("approval", "bob", "step 2 approved by bob")


@pytest.mark.parametrize("origin", ["baking", "awaiting_approval", "shifting"])
@pytest.mark.parametrize("full", [False, True])
def test_promote_never_resumes_a_paused_rollout(origin, full):
    s = to_baking(0.0)
    if origin == "awaiting_approval":
        s, _ = run(s, Command("promote", "alice"), 1.0)
    elif origin == "shifting":
        s.phase = P.SHIFTING
    s, _ = run(s, Command("pause", "pat"), 1.5)
    assert s.phase is P.PAUSED
    with pytest.raises(TransitionError, match=r"^the rollout is paused: `turnout resume` "
                                              r"first \(promote neither resumes nor skips an "
                                              r"approval\)$"):
        run(s, Command("promote", "alice", full=full), 2.0)
    # resume goes back to where it was paused, approval still owed.
    s, _ = run(s, Command("resume", "pat"), 3.0)
    assert s.phase is P(origin) and s.approved_step == -1


def test_approval_of_a_waiting_step():
    s = to_baking(0.0)
    s = measure(s, 5.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL), 5.1)
    s = measure(s, 10.2)
    s, actions = run(s, gate(Phase.SUCCESSFUL), 10.3)
    assert s.phase is P.AWAITING_APPROVAL and s.step == 1
    assert "step 2/3 (50%) needs approval (`turnout promote`)" in s.reason
    with pytest.raises(TransitionError, match=r"not paused \(phase awaiting_approval\)"):
        run(s, Command("resume", "bob"), 11.0)
    s, actions = run(s, Command("promote", "bob"), 12.0)
    assert s.phase is P.SHIFTING and s.approved_step == 1 and PushWeights(50) in actions
    assert ("approval", "bob", "step 2 approved by bob") in _notes(actions)


def test_full_promotion_skips_steps_and_gates():
    s = to_baking(0.0)
    s, actions = run(s, Command("promote", "carol", full=True), 1.0)
    assert s.full_promotion and s.step == 2 and PushWeights(100) in actions
    assert ("command", "carol", "full promotion requested by carol") in _notes(actions)
    s, actions = run(s, WeightsPushed(100, True, 0.001), 2.0)
    assert s.phase is P.PROMOTED and s.promoted_at == 2.0 and s.keep_warm_until == 62.0
    assert "promoted (--full: gates skipped by the operator)" in s.reason
    assert any(type(a).__name__ == "MarkPromoted" for a in actions)


def test_promote_on_the_last_step_promotes_and_refuses_elsewhere():
    s = to_baking(0.0)
    s, _ = run(s, Command("promote", "a", full=True), 1.0)
    with pytest.raises(TransitionError, match="cannot promote while shifting"):
        run(s, Command("promote", "a"), 1.5)
    s, _ = run(s, WeightsPushed(100, True, 0.001), 2.0)
    assert s.phase is P.PROMOTED
    with pytest.raises(TransitionError, match="nothing to promote"):
        run(s, Command("promote", "a"), 3.0)


def test_pause_and_resume_restart_the_bake():
    s = to_baking(0.0)
    s, actions = run(s, Command("pause", "dan"), 3.0)
    assert s.phase is P.PAUSED and s.paused_from is P.BAKING
    assert _notes(actions) == [("transition", "dan", "baking -> paused: paused by dan")]
    with pytest.raises(TransitionError, match="not paused"):
        run(to_baking(0.0), Command("resume", "dan"), 3.0)
    s, actions = run(s, Command("resume", "dan"), 20.0)
    assert s.phase is P.BAKING and s.step_entered_at == 20.0 and s.rounds == []
    assert s.next_measure_at == 25.0 and s.paused_from is None
    assert "resumed by dan at 10%; bake restarts" in s.reason


def test_an_unacked_step_push_pauses_and_resume_pushes_it_again():
    s, _ = run(new_state(), Started(), 0)
    s, _ = run(s, DeployFinished(True, "ok"), 0)
    s, _ = run(s, ValidationFinished(True, "ok"), 0)
    s, _ = run(s, WeightsPushed(10, False, 10.0, "envoy-b: timeout"), 10.0)
    assert s.phase is P.PAUSED and s.paused_from is P.SHIFTING
    assert s.reason == "not every Envoy ACKed 10%: envoy-b: timeout"
    assert s.applied_weight == 0
    s, actions = run(s, Command("resume", "erin"), 11.0)
    assert s.phase is P.SHIFTING and actions[-1] == PushWeights(10)
    s, _ = run(s, WeightsPushed(10, True, 0.0012), 12.0)
    assert s.phase is P.BAKING and s.applied_weight == 10
    assert s.steps_log[-1] == {"step": 0, "weight": 10, "entered_at": 12.0, "ack_ms": 1.2}
    assert s.reason == "step 1/3: 10% ACKed by every Envoy in 1.2 ms; baking"
