"""The rollout state machine as a pure function: ``transition(state, event, now)`` returns
the next state and the actions to carry out. No I/O, no clock of its own."""

from __future__ import annotations

import copy

from gates.metrics.evaluator import Decision, GateRound, Limits, assess
from turnout.controller.state import (
    ROLLBACK_CAUSES,
    Action,
    Command,
    CommandName,
    Deploy,
    DeployFinished,
    Event,
    GatesMeasured,
    MarkFailed,
    MarkPromoted,
    MarkRolledBack,
    MeasureGates,
    Note,
    PushWeights,
    RolloutPhase,
    RolloutState,
    SlotHealth,
    Started,
    Tick,
    TransitionError,
    Validate,
    ValidationFinished,
    WeightsPushed,
    rollback_cause,
)
from turnout.policy.model import Policy, build_policy

C = CommandName

P = RolloutPhase
AUTO = "controller"
SETTLE_S = 1.0  # Envoy flushes histograms every 1 s (bootstrap); Prometheus scrapes after


def policy_of(state: RolloutState) -> Policy:
    return build_policy(state.policy, state.source)


class _Transition:
    """Builder of one transition's result."""

    def __init__(self, state: RolloutState, now: float) -> None:
        self.state = copy.deepcopy(state)
        self.now = now
        self.actions: list[Action] = []
        self.policy = policy_of(state)

    def note(self, kind: str, message: str, *, actor: str = AUTO, evidence: object = None
             ) -> None:
        self.actions.append(Note(kind, actor, message, evidence))

    def go(self, phase: RolloutPhase, message: str, *, actor: str = AUTO,
           evidence: object = None) -> None:
        old = self.state.phase
        self.state.phase = phase
        self.state.reason = message
        if phase in (P.PROMOTED, P.ROLLED_BACK, P.ABORTED, P.FAILED):
            self.state.finished_at = self.now
        self.note("transition", f"{old} -> {phase}: {message}", actor=actor, evidence=evidence)

    def push(self, weight: int, shadow: float = 0.0) -> None:
        self.state.target_weight = weight
        self.actions.append(PushWeights(weight, shadow))

    def enter_step(self, index: int, *, actor: str = AUTO) -> None:
        steps = self.policy.steps
        self.state.step = index
        if self.state.rounds:
            self.state.previous_rounds = self.state.rounds
        self.state.rounds = []
        self.state.measuring = False
        step = steps[index]
        if step.approval and self.state.approved_step < index and not self.state.full_promotion:
            self.go(P.AWAITING_APPROVAL,
                    f"step {index + 1}/{len(steps)} ({step.weight}%) needs approval "
                    "(`turnout promote`)", actor=actor)
            return
        if step.shadow:
            self.go(P.SHIFTING, f"step {index + 1}/{len(steps)}: shadowing {step.shadow:g}% "
                    f"of live requests to {self.state.candidate_slot} (its weight stays "
                    f"{step.weight}%)", actor=actor)
        else:
            self.go(P.SHIFTING, f"step {index + 1}/{len(steps)}: shifting to {step.weight}%",
                    actor=actor)
        self.push(step.weight, step.shadow)

    def roll_back(self, reason: str, *, actor: str = AUTO,
                  ending: RolloutPhase = P.ROLLED_BACK, evidence: object = None) -> None:
        self.state.ending = ending
        self.state.rollback_decided_at = self.now
        self.go(P.ROLLING_BACK, reason, actor=actor, evidence=evidence)
        self.push(0)

    def pause(self, reason: str, *, actor: str = AUTO) -> None:
        self.state.paused_from = self.state.phase
        self.state.measuring = False
        self.go(P.PAUSED, reason, actor=actor)

    def result(self) -> tuple[RolloutState, list[Action]]:
        return self.state, self.actions


def transition(state: RolloutState, event: Event, now: float
               ) -> tuple[RolloutState, list[Action]]:
    """The next state and the actions to carry out. Raises TransitionError for a command
    that does not apply in the current phase."""
    if isinstance(event, Tick) and state.phase not in (P.BAKING, P.ROLLING_BACK):
        return state, []  # most ticks: nothing to do, so no copy of the state
    t = _Transition(state, now)
    s = t.state
    if isinstance(event, Command):
        _command(t, event)
        return t.result()
    if isinstance(event, Started) and s.phase is P.PENDING:
        t.go(P.DEPLOYING, f"deploying {s.model} to {s.candidate_slot}")
        t.actions.append(Deploy())
    elif isinstance(event, DeployFinished) and s.phase is P.DEPLOYING:
        if not event.ok:
            t.go(P.FAILED, f"deploy failed: {event.message}")
        elif t.policy.validation_enabled:
            t.go(P.VALIDATING, f"{s.model} ready on {s.candidate_slot}; validating")
            t.actions.append(Validate())
        else:
            t.enter_step(0)
    elif isinstance(event, ValidationFinished) and s.phase is P.VALIDATING:
        if event.passed:
            t.note("validation", f"passed: {event.summary}", evidence=event.report)
            t.enter_step(0)
        else:
            t.go(P.FAILED, f"validation failed: {event.summary}", evidence=event.report)
            t.actions.append(MarkFailed(f"validation failed: {event.summary}"))
    elif isinstance(event, WeightsPushed):
        _pushed(t, event)
    elif isinstance(event, GatesMeasured) and s.phase is P.BAKING and s.measuring:
        _measured(t, GateRound.from_dict(event.round))
    elif isinstance(event, SlotHealth):
        _slot_health(t, event)
    elif isinstance(event, Tick):
        _tick(t)
    return t.result()


def _pushed(t: _Transition, event: WeightsPushed) -> None:
    s = t.state
    if event.weight != s.target_weight:
        return  # an answer to an older push
    if s.phase is P.ROLLING_BACK:
        if event.converged:
            s.applied_weight = event.weight
            s.rollback_acked_at = t.now
            ending = s.ending or P.ROLLED_BACK
            # the rollback's reason and cause, before the transition replaces the reason
            why = f"{ending} {ROLLBACK_CAUSES[rollback_cause(s)]}: {s.reason}"
            t.go(ending, f"0% on {s.model}; {s.stable_slot} serves all traffic "
                 f"(ACKed in {event.seconds * 1e3:.1f} ms)")
            t.actions.append(MarkRolledBack(why))
        # not converged: the next tick pushes again (a rollback must complete)
        return
    if s.phase is not P.SHIFTING:
        return
    if not event.converged:
        t.pause(f"not every Envoy ACKed {event.weight}%: {event.detail}")
        return
    s.applied_weight = event.weight
    shadow = t.policy.steps[s.step].shadow
    s.steps_log.append({"step": s.step, "weight": event.weight, "entered_at": t.now,
                        "ack_ms": round(event.seconds * 1e3, 3),
                        **({"shadow": shadow} if shadow else {})})
    if s.full_promotion:
        _promote(t, "promoted (--full: gates skipped by the operator)")
        return
    s.step_entered_at = t.now
    s.next_measure_at = t.now + t.policy.gates.interval_s
    s.rounds = []
    what = (f"{event.weight}% and a {shadow:g}% shadow to {s.candidate_slot}" if shadow
            else f"{event.weight}%")
    t.go(P.BAKING, f"step {s.step + 1}/{len(t.policy.steps)}: {what} ACKed by every "
         f"Envoy in {event.seconds * 1e3:.1f} ms; baking")


def _promote(t: _Transition, message: str, *, actor: str = AUTO) -> None:
    s = t.state
    s.promoted_at = t.now
    s.keep_warm_until = t.now + t.policy.rollback.keep_warm_s
    t.go(P.PROMOTED, f"{message}; {s.stable_slot} stays warm as standby until rollback "
         "window ends", actor=actor)
    t.actions.append(MarkPromoted())


def _tick(t: _Transition) -> None:
    s = t.state
    if s.phase is P.ROLLING_BACK and s.applied_weight != 0:
        t.push(0)  # retry until every Envoy has it
        return
    if s.phase is not P.BAKING:
        return
    if s.deadline_at and t.now >= s.deadline_at:
        t.roll_back(f"progress deadline passed at step {s.step + 1} "
                    f"({t.policy.progress_deadline_s:.0f}s)")
        return
    if s.measuring or s.next_measure_at is None or t.now < s.next_measure_at:
        return
    assert s.step_entered_at is not None
    # Only data from this step counts: the window never reaches before the step began,
    # less a settling margin for Envoy's stats flush and Prometheus' scrape.
    window = min(t.policy.gates.window_s, max(1.0, t.now - s.step_entered_at - SETTLE_S))
    s.measuring = True
    t.actions.append(MeasureGates(window))


#: Phases in which the candidate may carry traffic (or is about to).
_LIVE = (P.SHIFTING, P.BAKING, P.AWAITING_APPROVAL, P.PAUSED)


def _slot_health(t: _Transition, event: SlotHealth) -> None:
    """A dead candidate is a failure, not an absence of data: when every server of the
    candidate slot is gone while it carries traffic, roll back at once (or pause, as the
    policy says). Envoy has already failed its share over to the stable slot."""
    s = t.state
    if event.slot != s.candidate_slot or event.total == 0 or event.healthy > 0:
        return
    if s.phase not in _LIVE or (s.target_weight == 0 and s.applied_weight == 0):
        return
    reason = (f"candidate slot {s.candidate_slot} unhealthy: 0/{event.total} servers ready "
              f"at {s.target_weight}%")
    if t.policy.rollback.on_candidate_unhealthy == "pause":
        if s.phase is not P.PAUSED:
            t.pause(f"{reason} (policy: pause)")
        return
    if s.phase is P.PAUSED:
        s.paused_from = None
    t.roll_back(reason)


def _measured(t: _Transition, gate_round: GateRound) -> None:
    s = t.state
    s.measuring = False
    s.rounds.append(gate_round.as_dict())
    for m in gate_round.measurements:
        if m.baseline is not None:
            s.baselines[m.metric] = m.baseline
    s.next_measure_at = t.now + t.policy.gates.interval_s
    gates = t.policy.gates
    limits = Limits(gates.failure_limit, gates.inconclusive_limit, gates.consecutive_error_limit)
    rounds = [GateRound.from_dict(r) for r in s.rounds]
    verdict = assess(rounds, limits)
    t.note("gates", f"step {s.step + 1} round {len(rounds)}: {gate_round.phase}",
           evidence={**gate_round.as_dict(), "step": s.step})
    if gate_round.phase == "Failed" and s.first_failure_at is None:
        s.first_failure_at = t.now
    if verdict.decision is Decision.FAILED:
        if t.policy.rollback.automatic:
            t.roll_back(f"gate failed at {s.target_weight}%: {verdict.reason}",
                        evidence=gate_round.as_dict())
        else:
            t.pause(f"gate failed at {s.target_weight}% (automatic rollback off): "
                    f"{verdict.reason}")
        return
    if verdict.decision is Decision.HOLD:
        errors = verdict.counts.get("consecutive_errors", 0) > gates.consecutive_error_limit
        if errors and gates.on_metric_errors == "rollback":
            t.roll_back(f"metrics unavailable at {s.target_weight}% (policy: rollback): "
                        f"{verdict.reason}", evidence=gate_round.as_dict())
            return
        t.pause(f"holding at {s.target_weight}%: {verdict.reason}")
        return
    assert s.step_entered_at is not None
    baked = t.now - s.step_entered_at >= t.policy.steps[s.step].bake_s
    if verdict.decision is Decision.PASS and baked:
        if s.step + 1 >= len(t.policy.steps):
            _promote(t, f"all {len(t.policy.steps)} steps passed their gates")
        else:
            t.enter_step(s.step + 1)


def available_commands(state: RolloutState, now: float) -> list[CommandName]:
    """The commands the machine accepts now (the dashboard offers just these): asked of
    the machine itself, so the page and the machine never disagree."""
    allowed = []
    for name in CommandName:
        try:
            transition(state, Command(name, "dashboard"), now)
        except TransitionError:
            continue
        allowed.append(name)
    return allowed


def _command(t: _Transition, command: Command) -> None:
    s = t.state
    name, actor = command.name, command.actor
    if name is C.ROLLBACK and s.phase is P.PROMOTED:
        if s.keep_warm_until is not None and t.now > s.keep_warm_until:
            raise TransitionError(
                f"the keep-warm window of {s.stable_slot} ended; deploy the old version again")
        t.roll_back(f"rollback after promotion requested by {actor}", actor=actor)
        return
    if s.finished:
        raise TransitionError(f"rollout {s.name} is {s.phase}; nothing to {name}")
    if name in (C.ABORT, C.ROLLBACK):
        ending = P.ABORTED if name is C.ABORT else P.ROLLED_BACK
        if s.phase in (P.PENDING, P.DEPLOYING, P.VALIDATING) and s.applied_weight == 0 \
                and s.target_weight == 0:
            t.go(ending, f"{name} requested by {actor} before any traffic moved", actor=actor)
            t.actions.append(MarkRolledBack(f"{ending} by an operator: {name} requested by "
                                            f"{actor} before any traffic moved"))
            return
        if s.phase is P.ROLLING_BACK:
            if name is C.ABORT and s.ending is not P.ABORTED:
                s.ending = P.ABORTED  # already going to 0%: end as aborted
                t.note("command", f"abort requested by {actor} while rolling back",
                       actor=actor)
                return
            raise TransitionError(f"already rolling back (ends {s.ending or P.ROLLED_BACK})")
        t.roll_back(f"{name} requested by {actor}", actor=actor, ending=ending)
        return
    if name is C.PAUSE:
        if s.phase not in (P.BAKING, P.AWAITING_APPROVAL, P.SHIFTING):
            raise TransitionError(f"cannot pause while {s.phase}")
        t.pause(f"paused by {actor}", actor=actor)
        return
    if name is C.RESUME:
        if s.phase is not P.PAUSED:
            raise TransitionError(f"not paused (phase {s.phase})")
        _resume(t, actor)
        return
    if name is C.PROMOTE:
        _promote_command(t, command)
        return
    raise TransitionError(f"unknown command {name!r}")


def _resume(t: _Transition, actor: str) -> None:
    s = t.state
    origin = s.paused_from or P.BAKING
    s.paused_from = None
    if origin is P.SHIFTING:
        t.go(P.SHIFTING, f"resumed by {actor}: pushing {s.target_weight}% again", actor=actor)
        t.push(s.target_weight)
    elif origin is P.AWAITING_APPROVAL:
        t.go(P.AWAITING_APPROVAL, f"resumed by {actor}", actor=actor)
    else:
        # Fresh evidence: the bake and the counters restart at this weight.
        s.rounds = []
        s.step_entered_at = t.now
        s.next_measure_at = t.now + t.policy.gates.interval_s
        t.go(P.BAKING, f"resumed by {actor} at {s.applied_weight}%; bake restarts", actor=actor)


def _promote_command(t: _Transition, command: Command) -> None:
    """One thing at a time: approve the waiting step, or cut the bake short (the next step
    then waits for its own approval), or with ``full`` go to the last step, approving each
    approval step on the way in its own audit entry. A paused rollout is resumed only by
    ``resume``."""
    s = t.state
    actor = command.actor
    if s.phase is P.PAUSED:
        raise TransitionError("the rollout is paused: `turnout resume` first (promote neither "
                              "resumes nor skips an approval)")
    if s.phase not in (P.BAKING, P.AWAITING_APPROVAL):
        raise TransitionError(f"cannot promote while {s.phase}")
    steps = t.policy.steps
    last = len(steps) - 1
    if command.full:
        s.full_promotion = True
        t.note("command", f"full promotion requested by {actor}", actor=actor)
        first = s.step if s.phase is P.AWAITING_APPROVAL else s.step + 1
        for index in range(first, last + 1):
            if steps[index].approval and s.approved_step < index:
                s.approved_step = index
                t.note("approval", f"step {index + 1} approved by {actor} (full promotion)",
                       actor=actor)
        t.enter_step(last, actor=actor)
        return
    if s.phase is P.AWAITING_APPROVAL:
        s.approved_step = s.step
        t.note("approval", f"step {s.step + 1} approved by {actor}", actor=actor)
        t.enter_step(s.step, actor=actor)
        return
    # Baking: skip the rest of this step's bake, nothing more.
    if s.step >= last:
        _promote(t, f"promoted by {actor}", actor=actor)
    else:
        t.note("command", f"step {s.step + 1} cut short by {actor}", actor=actor)
        t.enter_step(s.step + 1, actor=actor)
