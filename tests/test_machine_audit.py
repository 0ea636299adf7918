"""The audit trail of every operator command and health event, to the word: who did it,
what it said, from which phase to which, and what the machine asked for. The trail is
what an SRE reads after an incident, so its words are behaviour."""

from __future__ import annotations

import dataclasses

import pytest

from gates.metrics.measurement import Phase
from tests.test_machine import POLICY, gate, measure, new_state, run, to_baking
from turnout.controller.state import (
    Command,
    DeployFinished,
    GatesMeasured,
    MarkFailed,
    MarkPromoted,
    MarkRolledBack,
    MeasureGates,
    Note,
    PushWeights,
    RolloutPhase,
    SlotHealth,
    Started,
    Tick,
    TransitionError,
    ValidationFinished,
    WeightsPushed,
)

P = RolloutPhase


def moved(old: str, new: str, message: str, actor: str = "controller",
          evidence: object = None) -> Note:
    return Note("transition", actor, f"{old} -> {new}: {message}", evidence)


def baking_under(policy: str, now: float = 0.0):  # type: ignore[no-untyped-def]
    """A rollout of ``policy`` baking at its first step (10 %)."""
    s = new_state(policy)
    for event in (Started(), DeployFinished(True, "ok"), ValidationFinished(True, "ok"),
                  WeightsPushed(10, True, 0.001)):
        s, _ = run(s, event, now)
    return s


def promoted(at: float = 3.0):
    s = to_baking()
    s, _ = run(s, Command("promote", "sre", full=True), at)
    s, _ = run(s, WeightsPushed(100, True, 0.001), at)
    assert s.phase is P.PROMOTED and s.keep_warm_until == at + 60
    return s


def test_rollback_after_promotion_is_allowed_to_the_last_second_of_the_window():
    s = promoted()
    back, actions = run(s, Command("rollback", "ana"), 63.0)  # exactly keep_warm_until
    assert actions == [moved("promoted", "rolling_back",
                             "rollback after promotion requested by ana", "ana"),
                       PushWeights(0)]
    assert (back.ending, back.rollback_decided_at, back.target_weight) == \
        (P.ROLLED_BACK, 63.0, 0)
    with pytest.raises(TransitionError) as raised:
        run(s, Command("rollback", "ana"), 63.01)
    assert str(raised.value) == \
        "the keep-warm window of blue ended; deploy the old version again"


@pytest.mark.parametrize("name, ending", [("abort", "aborted"), ("rollback", "rolled_back")])
def test_stopping_before_any_traffic_ends_at_once(name, ending):
    for setup in ([], [Started()], [Started(), DeployFinished(True, "ok")]):
        s = new_state()
        for event in setup:
            s, _ = run(s, event, 1.0)
        before = s.phase
        s, actions = run(s, Command(name, "ops"), 2.0)
        assert actions == [moved(before, ending,
                                 f"{name} requested by ops before any traffic moved", "ops"),
                           MarkRolledBack(f"{ending} by an operator: {name} requested by ops "
                                          "before any traffic moved")]
        assert s.phase == ending and s.finished_at == 2.0


def test_abort_of_a_first_step_awaiting_approval_still_confirms_zero():
    """Nothing moved yet, but the rollout is past deploying: 0 % is pushed and ACKed
    before it ends, so no Envoy is left with a weight the controller never saw."""
    policy = POLICY.replace("- {weight: 10, bake: 10s}",
                            "- {weight: 10, bake: 10s, approval: true}")
    s = new_state(policy)
    for event in (Started(), DeployFinished(True, "ok"), ValidationFinished(True, "ok")):
        s, _ = run(s, event, 1.0)
    assert s.phase is P.AWAITING_APPROVAL and (s.target_weight, s.applied_weight) == (0, 0)
    s, actions = run(s, Command("abort", "ops"), 2.0)
    assert s.phase is P.ROLLING_BACK and actions[-1] == PushWeights(0)


def test_abort_while_rolling_back_changes_only_the_ending():
    s = measure(to_baking(), 5.0)
    s, _ = run(s, gate(Phase.FAILED), 5.0)
    assert s.ending is P.ROLLED_BACK and s.reason.startswith("gate failed at 10%: ")
    why = s.reason
    s, actions = run(s, Command("abort", "ops"), 6.0)
    assert actions == [Note("command", "ops", "abort requested by ops while rolling back")]
    assert s.ending is P.ABORTED and s.phase is P.ROLLING_BACK
    for name in ("abort", "rollback"):
        with pytest.raises(TransitionError, match=r"^already rolling back \(ends aborted\)$"):
            run(s, Command(name, "ops"), 7.0)
    s, actions = run(s, WeightsPushed(0, True, 0.002), 8.0)
    assert actions == [
        moved("rolling_back", "aborted",
              "0% on classifier:v2; blue serves all traffic (ACKed in 2.0 ms)"),
        # The registry records why the version was taken back, not that 0% was reached:
        # the gate's failure, the first cause, though the rollout ends as aborted.
        MarkRolledBack(f"aborted by a gate: {why}")]


def test_a_gate_failure_carries_its_round_as_evidence():
    s = measure(to_baking(), 5.0)
    event = gate(Phase.FAILED)
    s, actions = run(s, event, 5.0)
    transitions = [a for a in actions if isinstance(a, Note) and a.kind == "transition"]
    assert len(transitions) == 1 and transitions[0].evidence == event.round
    assert transitions[0].message.startswith("baking -> rolling_back: gate failed at 10%: ")


def paused_from(origin: str):
    s = to_baking()
    if origin == "shifting":
        s, _ = run(new_state(), Started(), 0)
        s, _ = run(s, DeployFinished(True, "ok"), 0)
        s, _ = run(s, ValidationFinished(True, "ok"), 0)
        s, _ = run(s, WeightsPushed(10, False, 10.0, "envoy-2: nacked"), 10.0)
        assert s.paused_from is P.SHIFTING
        return s
    if origin == "awaiting_approval":
        s = measure(s, 10.0)
        s, _ = run(s, gate(Phase.SUCCESSFUL), 10.0)
        assert s.phase is P.AWAITING_APPROVAL
    s, _ = run(s, Command("pause", "pat"), 11.0)
    assert s.paused_from == origin
    return s


@pytest.mark.parametrize("origin, message, pushed", [
    ("shifting", "resumed by kim: pushing 10% again", [PushWeights(10)]),
    ("awaiting_approval", "resumed by kim", []),
    ("baking", "resumed by kim at 10%; bake restarts", []),
])
def test_resume_returns_to_where_it_paused_and_says_who(origin, message, pushed):
    s = paused_from(origin)
    s, actions = run(s, Command("resume", "kim"), 20.0)
    assert actions == [moved("paused", origin, message, "kim"), *pushed]
    assert s.phase == origin and s.paused_from is None
    if origin == "baking":
        assert (s.rounds, s.step_entered_at, s.next_measure_at) == ([], 20.0, 25.0)


def test_a_pause_while_measuring_drops_the_round_in_flight():
    s = to_baking()
    s, actions = run(s, Tick(), 5.0)
    assert s.measuring
    s, actions = run(s, Command("pause", "pat"), 5.5)
    assert actions == [moved("baking", "paused", "paused by pat", "pat")]
    assert s.measuring is False
    s, _ = run(s, Command("resume", "pat"), 6.0)
    measure(s, 11.0)  # a new round is asked for


def test_promote_names_the_operator_on_every_path():
    # Awaiting approval: the step is approved and entered by the operator.
    s = measure(to_baking(), 10.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL), 10.0)
    s, actions = run(s, Command("promote", "lee"), 12.0)
    assert actions == [Note("approval", "lee", "step 2 approved by lee"),
                       moved("awaiting_approval", "shifting", "step 2/3: shifting to 50%",
                             "lee"),
                       PushWeights(50)]
    # Full promotion: the last step, entered by the operator.
    s = to_baking()
    assert s.step == 0 and s.approved_step == -1
    s, actions = run(s, Command("promote", "lee", full=True), 3.0)
    # Step 2's approval is given here, as its own entry naming who gave it.
    assert actions == [Note("command", "lee", "full promotion requested by lee"),
                       Note("approval", "lee", "step 2 approved by lee (full promotion)"),
                       moved("baking", "shifting", "step 3/3: shifting to 100%", "lee"),
                       PushWeights(100)]
    # From the approval step itself: that approval too, once.
    s = measure(to_baking(), 10.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL), 10.0)
    assert s.phase is P.AWAITING_APPROVAL
    s, actions = run(s, Command("promote", "kim", full=True), 12.0)
    assert actions[:2] == [Note("command", "kim", "full promotion requested by kim"),
                           Note("approval", "kim", "step 2 approved by kim (full promotion)")]
    assert s.approved_step == 1 and s.step == 2
    # On the last step: promoted by the operator.
    s, _ = run(s, WeightsPushed(100, True, 0.001), 3.0)
    assert s.phase is P.PROMOTED
    s = to_baking()
    s.step = 2
    s, actions = run(s, Command("promote", "lee"), 4.0)
    assert actions == [moved("baking", "promoted", "promoted by lee; blue stays warm as "
                             "standby until rollback window ends", "lee"), MarkPromoted()]


def live(phase: P = P.BAKING, target: int = 10, applied: int = 10):
    return dataclasses.replace(to_baking(), phase=phase, target_weight=target,
                               applied_weight=applied)


@pytest.mark.parametrize("state, event", [
    (live(), SlotHealth("blue", 0, 2)),  # the stable slot: Envoy's failover, not ours
    (live(), SlotHealth("green", 0, 0)),  # no servers known: no verdict
    (live(), SlotHealth("green", 1, 2)),  # one server left serves
    (live(P.VALIDATING, 0, 0), SlotHealth("green", 0, 2)),  # no traffic phase
    (live(P.BAKING, 0, 0), SlotHealth("green", 0, 2)),  # nothing sent, nothing asked
])
def test_a_candidate_slot_health_event_that_changes_nothing(state, event):
    after, actions = run(state, event, 9.0)
    assert actions == [] and after == state


@pytest.mark.parametrize("target, applied", [(10, 0), (0, 10), (10, 10)])
def test_a_dead_candidate_carrying_or_about_to_carry_traffic_is_rolled_back(target, applied):
    _, actions = run(live(P.SHIFTING, target, applied), SlotHealth("green", 0, 2), 9.0)
    reason = f"candidate slot green unhealthy: 0/2 servers ready at {target}%"
    assert actions == [moved("shifting", "rolling_back", reason), PushWeights(0)]


def test_a_dead_candidate_while_paused_rolls_back_and_forgets_the_pause():
    s = paused_from("baking")
    s, actions = run(s, SlotHealth("green", 0, 3), 12.0)
    assert s.phase is P.ROLLING_BACK and s.paused_from is None
    assert actions[0] == moved("paused", "rolling_back",
                               "candidate slot green unhealthy: 0/3 servers ready at 10%")


def test_a_dead_candidate_under_a_pause_policy_pauses_once():
    policy = POLICY.replace("rollback: {keepWarm: 60s}",
                            "rollback: {keepWarm: 60s, onCandidateUnhealthy: pause}")
    s = baking_under(policy, 1.0)
    s, actions = run(s, SlotHealth("green", 0, 2), 2.0)
    assert actions == [moved("baking", "paused", "candidate slot green unhealthy: 0/2 servers "
                             "ready at 10% (policy: pause)")]
    again, actions = run(s, SlotHealth("green", 0, 2), 3.0)
    assert actions == [] and again.phase is P.PAUSED


def test_the_way_in_reads_as_it_happened():
    from turnout.controller.state import Deploy, Validate

    s, actions = run(new_state(), Started(), 1.0)
    assert actions == [moved("pending", "deploying", "deploying classifier:v2 to green"),
                       Deploy()]
    failed, actions = run(s, DeployFinished(False, "load failed"), 2.0)
    assert actions == [moved("deploying", "failed", "deploy failed: load failed")]
    assert failed.finished_at == 2.0
    s, actions = run(s, DeployFinished(True, "ok"), 2.0)
    assert actions == [moved("deploying", "validating",
                             "classifier:v2 ready on green; validating"), Validate()]
    report = {"checks": ["parity"]}
    bad, actions = run(s, ValidationFinished(False, "parity: 3 outputs differ", report), 3.0)
    assert actions == [moved("validating", "failed", "validation failed: parity: 3 outputs "
                             "differ", evidence=report),
                       MarkFailed("validation failed: parity: 3 outputs differ")]
    assert bad.phase is P.FAILED and bad.target_weight == 0
    s, actions = run(s, ValidationFinished(True, "3 checks", report), 3.0)
    assert actions == [Note("validation", "controller", "passed: 3 checks", report),
                       moved("validating", "shifting", "step 1/3: shifting to 10%"),
                       PushWeights(10)]
    s, actions = run(s, WeightsPushed(10, True, 0.0025), 4.0)
    assert actions == [moved("shifting", "baking", "step 1/3: 10% ACKed by every Envoy in "
                             "2.5 ms; baking")]
    assert s.steps_log == [{"step": 0, "weight": 10, "entered_at": 4.0, "ack_ms": 2.5}]
    assert (s.step_entered_at, s.next_measure_at, s.applied_weight) == (4.0, 9.0, 10)


def test_without_validation_the_first_step_follows_the_deploy():
    policy = POLICY.replace("  progressDeadline: 10m", "  progressDeadline: 10m\n"
                            "  validation: {enabled: false}")
    s, _ = run(new_state(policy), Started(), 1.0)
    s, actions = run(s, DeployFinished(True, "ok"), 2.0)
    assert actions == [moved("deploying", "shifting", "step 1/3: shifting to 10%"),
                       PushWeights(10)]


def test_measurements_are_asked_for_on_time_over_this_steps_data_only():
    s = to_baking(100.0)
    _, actions = run(s, Tick(), 104.9)
    assert actions == []
    s, actions = run(s, Tick(), 105.0)
    # 5 s into the step, less the 1 s settling margin: a 4 s window, not the policy's 30 s.
    assert actions == [MeasureGates(4.0)] and s.measuring
    _, actions = run(s, Tick(), 106.0)
    assert actions == []  # one round at a time
    late = to_baking(100.0)
    late, actions = run(late, Tick(), 200.0)
    assert actions == [MeasureGates(30.0)]
    early = to_baking(100.0)
    early.next_measure_at = 100.5
    _, actions = run(early, Tick(), 100.5)
    assert actions == [MeasureGates(1.0)]  # never under 1 s


def test_a_gate_round_is_noted_with_its_step_and_sets_the_next_measurement():
    s = measure(to_baking(), 5.0)
    event = gate(Phase.SUCCESSFUL)
    s, actions = run(s, event, 6.0)
    assert actions == [Note("gates", "controller", "step 1 round 1: Successful",
                            {**event.round, "step": 0})]
    assert s.next_measure_at == 11.0 and not s.measuring and s.first_failure_at is None
    s = measure(s, 11.0)
    s, _ = run(s, gate(Phase.FAILED), 12.0)
    assert s.first_failure_at == 12.0


def test_the_deadline_and_the_last_step_say_so():
    s = to_baking()
    s, actions = run(s, Tick(), 600.0)
    assert actions == [moved("baking", "rolling_back",
                             "progress deadline passed at step 1 (600s)"), PushWeights(0)]
    s = to_baking()
    s.step, s.target_weight = 2, 100
    s = measure(s, 10.0)
    s, actions = run(s, gate(Phase.SUCCESSFUL), 10.0)
    assert actions[-2:] == [moved("baking", "promoted", "all 3 steps passed their gates; blue "
                                  "stays warm as standby until rollback window ends"),
                            MarkPromoted()]
    assert (s.promoted_at, s.keep_warm_until, s.finished_at) == (10.0, 70.0, 10.0)


def test_a_full_promotion_is_promoted_when_its_push_is_acked():
    s = to_baking()
    s, _ = run(s, Command("promote", "lee", full=True), 3.0)
    s, actions = run(s, WeightsPushed(100, True, 0.001), 4.0)
    assert actions == [moved("shifting", "promoted", "promoted (--full: gates skipped by the "
                             "operator); blue stays warm as standby until rollback window "
                             "ends"), MarkPromoted()]


def test_an_unacked_push_pauses_naming_the_envoys():
    s, _ = run(new_state(), Started(), 0)
    s, _ = run(s, DeployFinished(True, "ok"), 0)
    s, _ = run(s, ValidationFinished(True, "ok"), 0)
    s, actions = run(s, WeightsPushed(10, False, 10.0, "envoy-2: timeout"), 10.0)
    assert actions == [moved("shifting", "paused",
                             "not every Envoy ACKed 10%: envoy-2: timeout")]
    assert s.applied_weight == 0 and s.paused_from is P.SHIFTING


def test_a_rollback_push_not_acked_is_retried_only_while_traffic_is_out():
    s = measure(to_baking(), 5.0)
    s, _ = run(s, gate(Phase.FAILED), 5.0)
    s, actions = run(s, WeightsPushed(0, False, 1.0, "envoy-2: timeout"), 6.0)
    assert actions == [] and s.phase is P.ROLLING_BACK
    s, actions = run(s, Tick(), 6.5)
    assert actions == [PushWeights(0)]
    s.applied_weight = 0
    _, actions = run(s, Tick(), 7.0)
    assert actions == []


def test_holding_rounds_pause_with_the_reason():
    s = to_baking()
    for now in (5.0, 10.0, 15.0):
        s = measure(s, now)
        s, actions = run(s, gate(Phase.INCONCLUSIVE), now)
    assert actions[-1].kind == "transition"
    assert actions[-1].message.startswith("baking -> paused: holding at 10%: ")


def test_a_transition_never_changes_the_state_it_was_given():
    """The driver keeps the old state when the new one cannot be stored: a transition
    must build a new state, not edit the old one's lists and maps."""
    import copy

    s = measure(to_baking(), 5.0)
    before = copy.deepcopy(s)
    after, _ = run(s, gate(Phase.SUCCESSFUL), 6.0)
    assert s == before and after.rounds != before.rounds
    s = to_baking()
    before = copy.deepcopy(s)
    run(s, Command("promote", "lee", full=True), 3.0)
    assert s == before


def test_only_the_start_moves_a_pending_rollout():
    s = new_state()
    for event in (SlotHealth("green", 0, 2), WeightsPushed(0, True, 0.001), Tick()):
        after, actions = run(s, event, 1.0)
        assert actions == [] and after.phase is P.PENDING


def test_ack_times_are_reported_to_the_tenth_and_logged_to_the_microsecond():
    s, _ = run(new_state(), Started(), 0)
    s, _ = run(s, DeployFinished(True, "ok"), 0)
    s, _ = run(s, ValidationFinished(True, "ok"), 0)
    s, actions = run(s, WeightsPushed(10, True, 0.12345678), 1.0)
    assert actions[0].message.endswith("10% ACKed by every Envoy in 123.5 ms; baking")
    assert s.steps_log[-1]["ack_ms"] == 123.457
    s = measure(s, 6.0)
    s, _ = run(s, gate(Phase.FAILED), 6.0)
    s, actions = run(s, WeightsPushed(0, True, 0.5), 7.0)
    assert actions[0].message.endswith("(ACKed in 500.0 ms)")


def test_baselines_are_kept_from_measurements_that_have_one():
    from gates.metrics.evaluator import GateRound
    from gates.metrics.measurement import Measurement

    s = measure(to_baking(), 5.0)
    round_ = GateRound(5.0, 5.0, (
        Measurement("errors", Phase.SUCCESSFUL, "ok", value=0.0, baseline=0.002),
        Measurement("shadow", Phase.SUCCESSFUL, "ok", value=5.0, dry_run=True)))
    s, _ = run(s, GatesMeasured(round_.as_dict()), 6.0)
    assert s.baselines == {"errors": 0.002}


def test_missing_data_pauses_even_when_metric_errors_would_roll_back():
    strict = POLICY.replace("consecutiveErrorLimit: 1", "consecutiveErrorLimit: 0\n"
                            "    onMetricErrors: rollback").replace("inconclusiveLimit: 2",
                                                               "inconclusiveLimit: 0")
    s = baking_under(strict, 0.0)
    s = measure(s, 5.0)
    s, _ = run(s, gate(Phase.INCONCLUSIVE), 5.0)
    assert s.phase is P.PAUSED and s.reason.startswith("holding at 10%: 1 inconclusive rounds")


def test_metric_errors_rolling_back_carry_their_round():
    strict = POLICY.replace("consecutiveErrorLimit: 1", "consecutiveErrorLimit: 0\n"
                            "    onMetricErrors: rollback")
    s = baking_under(strict, 0.0)
    s = measure(s, 5.0)
    event = gate(Phase.ERROR)
    s, actions = run(s, event, 5.0)
    transition = next(a for a in actions if isinstance(a, Note) and a.kind == "transition")
    assert transition.evidence == event.round
    assert transition.message.startswith("baking -> rolling_back: metrics unavailable at 10% "
                                         "(policy: rollback): 1 consecutive metric errors")


def test_pausing_where_it_cannot_says_the_phase():
    with pytest.raises(TransitionError, match=r"^cannot pause while pending$"):
        run(new_state(), Command("pause", "pat"), 1.0)


def test_the_policy_is_read_relative_to_its_own_file(tmp_path):
    from turnout.controller.machine import policy_of

    doc = new_state().policy
    doc["spec"]["validation"] = {"samples": "s.npz"}
    s = dataclasses.replace(new_state(), policy=doc, source=str(tmp_path / "p.yaml"))
    assert policy_of(s).validation.samples == str(tmp_path.resolve() / "s.npz")
    assert policy_of(s).source == str(tmp_path / "p.yaml")


def test_a_stored_state_comes_back_with_its_phases_as_phases():
    """After a restart the machine compares phases by identity (``is P.SHIFTING``): a
    phase read back as a plain string would resume a paused push as a bake."""
    import json

    from turnout.controller.state import RolloutState

    def stored(state):  # type: ignore[no-untyped-def]
        return RolloutState.from_dict(json.loads(json.dumps(state.as_dict())))  # as stores do

    paused = paused_from("shifting")
    back = stored(paused)
    assert back == paused and back.paused_from is P.SHIFTING and back.phase is P.PAUSED
    _, actions = run(back, Command("resume", "kim"), 20.0)
    assert actions[-1] == PushWeights(10)
    s = measure(to_baking(), 5.0)
    s, _ = run(s, gate(Phase.FAILED), 5.0)
    s, _ = run(s, Command("abort", "ops"), 6.0)
    back = stored(s)
    assert back.ending is P.ABORTED and back.paused_from is None


@pytest.mark.parametrize("reason, ending, cause", [
    ("gate failed at 10%: errors", P.ROLLED_BACK, "gate"),
    ("gate failed at 10%: errors", P.ABORTED, "gate"),  # the first cause counts
    ("metrics unavailable at 10% (policy: abort)", P.ABORTED, "metric_errors"),
    ("candidate slot green unhealthy: 0/2 servers ready", P.ROLLED_BACK, "unhealthy"),
    ("progress deadline passed at step 2", P.ROLLED_BACK, "deadline"),
    ("abort requested by ops", P.ABORTED, "abort"),
    ("rollback requested by ops", P.ROLLED_BACK, "manual"),
    ("rollback after promotion requested by ana", None, "manual"),
])
def test_why_traffic_is_taken_back(reason, ending, cause):
    from turnout.controller.state import ROLLBACK_CAUSES, rollback_cause
    s = dataclasses.replace(new_state(), reason=reason, ending=ending)
    assert rollback_cause(s) == cause
    assert cause in ROLLBACK_CAUSES
