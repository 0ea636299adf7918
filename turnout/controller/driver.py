"""Drives one rollout at a time: feeds events to the pure state machine, stores each new
state (with the weights it decided and its audit entries) *before* acting, and carries
out the actions. Runs on the control plane's event loop; blocking work (deploy,
validation, metric queries) runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gates.metrics import GateRound, Measurement, MetricsProvider, Phase, measure_round
from gates.metrics.sources import SHADOW, MetricSource, ShadowSource
from gates.shadow.compare import ShadowStats
from gates.validation import validate_artifact
from triton_slots.artifact import ArtifactError, artifact_signature
from triton_slots.deploy import DeployError, deploy
from triton_slots.registry import RegistryBackend, RegistryError, Stage
from triton_slots.routing import SLOT_NAMES
from triton_slots.signature import SignatureError
from turnout.controller.guard import refuse_overwrite
from turnout.controller.machine import available_commands, policy_of, transition
from turnout.controller.state import (
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
)
from turnout.errors import ConfigError
from turnout.policy import Policy
from turnout.policy.fit import fit_problems
from turnout.store import AuditEntry, Fenced, Outgoing, Store, StoreUnavailable
from turnout.topology import Shadow
from turnout.weights import Weights

if TYPE_CHECKING:
    from turnout.controller.ports import TrafficPlane

log = logging.getLogger("turnout.controller")
#: A failed state write is retried this many times (doubling from 50 ms) before an
#: operator's command is answered "store unavailable" (503); the event itself is kept.
COMMIT_ATTEMPTS = 4
RETRY_EVENT_S = 0.5  # a worker's outcome that could not be stored is offered again after


class RolloutConflict(TransitionError):
    """Another rollout is in progress, or the slots are not in a state to start one."""


def _safe_direction(old: RolloutState, new: RolloutState, actions: list[Action]) -> bool:
    """Rolling back, aborting or finishing: what must happen even while the store fails
    (traffic back to the stable slot). The record follows when the store comes back."""
    if new.phase in (RolloutPhase.ROLLING_BACK, RolloutPhase.ROLLED_BACK,
                     RolloutPhase.ABORTED, RolloutPhase.FAILED):
        return True
    return any(isinstance(a, PushWeights) and a.weight == 0 for a in actions)


@dataclass
class _Job:
    state: RolloutState
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    workers: set[asyncio.Task] = field(default_factory=set)
    # Decisions acted on while the store failed: written, in order, once it answers.
    unsaved: list[tuple[RolloutState, Weights | None, list[AuditEntry], list[Outgoing]]] = field(
        default_factory=list)


class _Deferred(Exception):
    """An event put back on the queue because its decision could not be stored yet."""


def weights_for(state: RolloutState, candidate_percent: int) -> Weights:
    values = {state.candidate_slot: candidate_percent, state.stable_slot: 100 - candidate_percent}
    return Weights(**values)


class RolloutController:
    def __init__(
        self,
        plane: TrafficPlane,
        store: Store,
        *,
        registry: RegistryBackend,
        provider: MetricsProvider | None,
        tick_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[RolloutState], None] = lambda _: None,
        stream: MetricSource | None = None,
        outbox: Callable[[RolloutState | None, RolloutState], list[Outgoing]] =
        lambda *_: [],
    ) -> None:
        """``outbox`` names the notices a transition (from None: a new rollout) sends;
        they are stored with the decision, in its transaction."""
        self.plane = plane
        self.store = store
        self.registry = registry
        self.provider = provider
        self.stream = stream
        self.tick_s = tick_s
        self.clock = clock
        self.on_change = on_change
        self.outbox = outbox
        self._job: _Job | None = None
        self.health: dict[str, SlotHealth] = {}

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume the rollout in progress, if any, exactly where it was."""
        data = self.store.active_rollout()
        if data is None:
            return
        state = RolloutState.from_dict(data)
        state.measuring = False
        log.info("resuming rollout %s at %s (step %d, %d%%)", state.name, state.phase,
                 state.step + 1, state.target_weight)
        with contextlib.suppress(StoreUnavailable):  # resuming matters more than the note
            self.store.commit(audit=[AuditEntry(
                kind="resume", actor="controller", rollout=state.id,
                phase_from=str(state.phase), phase_to=str(state.phase),
                weights=self.plane.weights.as_dict(),
                message=f"control plane restarted; resuming at {state.phase}, step "
                        f"{state.step + 1}, serving {self.plane.weights.as_dict()}")])
        job = self._spawn(state)
        if state.phase is RolloutPhase.PENDING:
            await job.queue.put((Started(), None))
        for action in _actions_to_resume(state):
            self._execute(job, action)

    async def stop(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        tasks = [t for t in (job.task, *job.workers) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- API ------------------------------------------------------------------------------
    def current(self) -> RolloutState | None:
        if self._job is not None:
            return self._job.state
        data = self.store.latest_rollout()
        return RolloutState.from_dict(data) if data else None

    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.state.finished

    async def apply(self, policy: Policy, *, actor: str, force: bool = False) -> RolloutState:
        """Start a rollout of ``policy``. Refused (changing nothing) while one runs, or onto
        the standby kept warm for an instant rollback unless ``force`` (then recorded)."""
        if self.busy:
            assert self._job is not None
            raise RolloutConflict(f"rollout {self._job.state.name} is {self._job.state.phase}; "
                                  "abort it or wait for it to finish")
        name, version = policy.model_ref
        try:
            record = self.registry.verify(name, version)
        except RegistryError as exc:
            raise ConfigError(f"{policy.source}: spec.model: {exc}") from exc
        try:
            signature = artifact_signature(record.path)
        except (ArtifactError, SignatureError) as exc:
            raise ConfigError(f"{policy.source}: spec.model: {exc}") from exc
        problems = fit_problems(policy, signature)
        if problems:
            raise ConfigError("\n".join(problems))
        weights = self.plane.weights.as_dict()
        stable = [slot for slot in SLOT_NAMES if weights[slot] == 100]
        if len(stable) != 1:
            raise RolloutConflict(f"traffic is split {weights}; a rollout starts from one slot "
                                  "at 100%")
        stable_slot = stable[0]
        candidate_slot = next(s for s in SLOT_NAMES if s != stable_slot)
        # The version serving now: the active one (a slot serves every model of the set).
        stable_model = next((r.ref for r in self.registry.list(name)
                             if r.stage == Stage.ACTIVE), None)
        if stable_model == record.ref:
            raise RolloutConflict(f"{record.ref} already serves from {stable_slot}")
        now = self.clock()
        given_up = refuse_overwrite(self.store.latest_rollout(), candidate_slot, now=now,
                                    force=force, verb="applying")
        state = RolloutState(
            id=uuid.uuid4().hex[:12], name=policy.name, model=record.ref, digest=record.digest,
            candidate_slot=candidate_slot, stable_slot=stable_slot, stable_model=stable_model,
            policy=policy.document, source=policy.source, created_at=now,
            deadline_at=now + policy.progress_deadline_s,
        )
        forced = [] if given_up is None else [AuditEntry(
            kind="force", actor=actor, rollout=state.id, weights=weights,
            message=f"--force by {actor}: {given_up}; that rollback is given up")]
        self.store.commit(
            rollout=(state.id, str(state.phase), False, state.as_dict()),
            outbox=self.outbox(None, state),
            audit=[*forced, AuditEntry(kind="apply", actor=actor, rollout=state.id,
                              phase_to=str(state.phase), weights=weights,
                              digests=self._digests(state),
                              message=f"applied {policy.source or policy.name}: {record.ref} "
                                      f"onto {candidate_slot} (stable {stable_slot})")])
        job = self._spawn(state)
        await self._send(job, Started())
        return job.state

    async def command(self, name: str, *, actor: str, full: bool = False) -> RolloutState:
        job = self._job
        if job is None or job.state.finished:
            data = self.store.latest_rollout()
            if data is None:
                raise TransitionError("no rollout to act on")
            state = RolloutState.from_dict(data)
            if not (name == CommandName.ROLLBACK and state.phase is RolloutPhase.PROMOTED):
                raise TransitionError(f"rollout {state.name} is {state.phase}; nothing to {name}")
            job = self._spawn(state)
        return await self._send(job, Command(name, actor, full))

    # ---- the loop -------------------------------------------------------------------------
    def _spawn(self, state: RolloutState) -> _Job:
        job = _Job(state)
        self._job = job
        job.task = asyncio.create_task(self._run(job), name=f"rollout-{state.id}")
        for health in self.health.values():  # what is known now counts from the start
            job.queue.put_nowait((health, None))
        return job

    def slot_health(self, slot: str, healthy: int, total: int) -> None:
        """The control plane's probes saw a slot's health change (call on the loop)."""
        event = SlotHealth(slot, healthy, total)
        self.health[slot] = event
        job = self._job
        if job is not None and not job.state.finished:
            job.queue.put_nowait((event, None))

    async def _send(self, job: _Job, event: Event) -> RolloutState:
        reply: asyncio.Future = asyncio.get_running_loop().create_future()
        await job.queue.put((event, reply))
        return await reply

    async def _run(self, job: _Job) -> None:
        ticker = asyncio.create_task(self._tick(job))
        try:
            while True:
                event, reply = await job.queue.get()
                try:
                    await self._handle(job, event, reply)
                except _Deferred:
                    continue  # queued again; its reply (if any) is answered then
                except (TransitionError, StoreUnavailable) as exc:
                    if reply is not None and not reply.done():
                        reply.set_exception(exc)
                    continue
                except Exception as exc:  # never lose the loop; record what broke
                    log.exception("rollout %s: handling %r failed", job.state.name, event)
                    if reply is not None and not reply.done():
                        reply.set_exception(exc)
                    continue
                if reply is not None and not reply.done():
                    reply.set_result(job.state)
        finally:
            ticker.cancel()

    async def _tick(self, job: _Job) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            if job.queue.empty():
                await job.queue.put((Tick(), None))

    async def _commit(self, new: RolloutState, weights: Weights | None,
                      audit: list[AuditEntry], outbox: list[Outgoing], *,
                      attempts: int = COMMIT_ATTEMPTS) -> bool:
        """Write state, weights, audit and notices in one transaction, retrying with
        back-off."""
        delay = 0.05
        for attempt in range(attempts):
            try:
                self.store.commit(rollout=(new.id, str(new.phase), new.finished,
                                           new.as_dict()), weights=weights, audit=audit,
                                  outbox=outbox)
                return True
            except Fenced:
                raise  # another replica leads: never retried, never acted on
            except StoreUnavailable as exc:
                log.error("state write failed (attempt %d/%d): %s", attempt + 1, attempts, exc)
                if attempt + 1 < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        return False

    async def _flush_unsaved(self, job: _Job) -> bool:
        """Write decisions taken while the store failed; True when none is left."""
        while job.unsaved:
            state, weights, audit, outbox = job.unsaved[0]
            if not await self._commit(state, weights, audit, outbox, attempts=1):
                return False
            job.unsaved.pop(0)
            log.info("rollout %s: stored a decision taken while the store failed (%s)",
                     state.name, state.phase)
        return True

    async def _handle(self, job: _Job, event: Event,
                      reply: asyncio.Future | None = None) -> None:
        if job.unsaved and not await self._flush_unsaved(job) and isinstance(event, Tick):
            return
        old = job.state
        new, actions = transition(old, event, self.clock())
        if new == old and not actions:
            return
        pushes = [a for a in actions if isinstance(a, PushWeights)]
        weights = weights_for(new, pushes[-1].weight) if pushes else None
        # Notes carry the weights every Envoy has ACKed; a decided push gets its own entry.
        acked = weights_for(new, new.applied_weight)
        audit = [self._audit(old, new, a, acked) for a in actions if isinstance(a, Note)]
        if weights is not None:
            actor = next((a.actor for a in actions if isinstance(a, Note)), "controller")
            audit.append(AuditEntry(
                kind="weights", actor=actor, rollout=new.id, phase_from=str(old.phase),
                phase_to=str(new.phase), weights=weights.as_dict(),
                digests=self._digests(new),
                message=f"push {pushes[-1].weight}% to {new.model} on {new.candidate_slot}"))
        stamped = time.time()
        audit = [e if e.at else dataclasses.replace(e, at=stamped) for e in audit]
        # Durable before acting: a crash from here on resumes from this state and weights.
        outbox = self.outbox(old, new)
        if job.unsaved or not await self._commit(new, weights, audit, outbox):
            if not _safe_direction(old, new, actions):
                if isinstance(event, (Command, Tick)):
                    # An operator gets the reason (503); a tick simply comes again.
                    raise StoreUnavailable("the state store is failing; nothing was changed "
                                           "(the rollout holds where it is)")
                # A worker's outcome is never dropped: offer it again shortly.
                asyncio.get_running_loop().call_later(
                    RETRY_EVENT_S, job.queue.put_nowait, (event, reply))
                raise _Deferred
            # Traffic goes back to the stable slot now; the record follows.
            log.error("rollout %s: acting on %s before it is stored", new.name, new.phase)
            job.unsaved.append((new, weights, audit, outbox))
        job.state = new
        self.on_change(new)
        for action in actions:
            self._execute(job, action)

    def _audit(self, old: RolloutState, new: RolloutState, note: Note,
               weights: Weights) -> AuditEntry:
        return AuditEntry(
            kind=note.kind, actor=note.actor, message=note.message, rollout=new.id,
            phase_from=str(old.phase), phase_to=str(new.phase), weights=weights.as_dict(),
            digests=self._digests(new), evidence=note.evidence,
        )

    def _digests(self, state: RolloutState) -> dict[str, str]:
        digests = {state.model: state.digest}
        if state.stable_model:
            with contextlib.suppress(RegistryError):
                name, version = state.stable_model.split(":", 1)
                digests[state.stable_model] = self.registry.get(name, version).digest
        return digests

    # ---- actions --------------------------------------------------------------------------
    def _execute(self, job: _Job, action: Action) -> None:
        if isinstance(action, Note):
            return
        if isinstance(action, MarkPromoted):
            self._mark_promoted(job.state)
            return
        if isinstance(action, MarkFailed | MarkRolledBack):
            self._mark_failed(job.state, action.reason, Stage.FAILED
                              if isinstance(action, MarkFailed) else Stage.ROLLED_BACK)
            return
        worker = asyncio.create_task(self._work(job, action))
        job.workers.add(worker)
        worker.add_done_callback(job.workers.discard)

    async def _work(self, job: _Job, action: Action) -> None:
        """Carry out one action and feed its outcome back. An action that raises becomes
        its failure event, so a rollout can never hang on a crashed worker."""
        try:
            event = await self._outcome(job.state, action)
        except Exception as exc:
            log.exception("rollout %s: %s failed", job.state.name, type(action).__name__)
            event = _failure_event(job.state, action, f"{type(exc).__name__}: {exc}")
        await job.queue.put((event, None))

    async def _outcome(self, state: RolloutState, action: Action) -> Event:
        event: Event
        if isinstance(action, Deploy):
            event = await asyncio.to_thread(self._deploy, state)
        elif isinstance(action, Validate):
            event = await asyncio.to_thread(self._validate, state)
        elif isinstance(action, PushWeights):
            convergence = policy_of(state).convergence
            rollback = action.weight == 0 and state.phase is RolloutPhase.ROLLING_BACK
            shadow = (Shadow(state.candidate_slot, action.shadow, self.plane.preview_key)
                      if action.shadow else None)
            result = await self.plane.apply_weights(
                weights_for(state, action.weight), timeout=convergence.timeout_s,
                quorum=convergence.min_acked, early=rollback, shadow=shadow)
            detail = "; ".join(f"{o.node_id}: {o.outcome} {o.detail}".strip()
                               for o in result.outcomes if o.outcome != "acked")
            # A rollback went out to everyone and is never held by a straggler.
            converged = result.converged or (rollback and result.answered_ok)
            event = WeightsPushed(action.weight, converged, result.seconds, detail)
        elif isinstance(action, MeasureGates):
            # The shadow comparison grows on this loop: read it here, not in the thread.
            event = await asyncio.to_thread(self._measure, state, action.window_s,
                                            self.plane.shadow_figures())
        else:  # pragma: no cover - every action type is handled above
            raise AssertionError(action)
        return event

    def _deploy(self, state: RolloutState) -> DeployFinished:
        name, version = state.model.split(":", 1)
        with self.plane.deploying(state.candidate_slot):
            slot = self.plane.slot(state.candidate_slot)  # its servers now, under the lock
            try:
                result = deploy(self.registry, name, version, slot=slot.name,
                                endpoints=list(slot.endpoints), repository=slot.repository,
                                progress=lambda line: log.info("deploy: %s", line))
            except DeployError as exc:
                return DeployFinished(False, str(exc))
        return DeployFinished(True, f"ready on {len(result.endpoints)} server(s) in "
                              f"{result.seconds:.1f}s", result.digest)

    def _validate(self, state: RolloutState) -> ValidationFinished:
        name, version = state.model.split(":", 1)
        report = validate_artifact(
            self.registry, self.registry.get(name, version),
            ingress=self.plane.ingress_address, preview_key=self.plane.preview_key,
            candidate_slot=state.candidate_slot, baseline_slot=state.stable_slot,
            settings=policy_of(state).validation,
            progress=lambda line: log.info("validate: %s", line),
        )
        return ValidationFinished(report.passed, report.summary, report.as_dict())

    def _measure(self, state: RolloutState, window_s: float,
                 figures: ShadowStats | None = None) -> GatesMeasured:
        policy = policy_of(state)
        name, version = state.model.split(":", 1)
        try:
            model = self.registry.get(name, version).model_name
        except RegistryError:
            model = ""
        # A shadow step is judged by the shadow gates only (the candidate serves no live
        # request); a live step by the others.
        shadowing = bool(policy.steps[state.step].shadow) if state.step >= 0 else False
        metrics = [m for m in policy.gates.metrics if (m.source == SHADOW) == shadowing]
        gate_round = measure_round(
            self.provider, metrics, candidate=state.candidate_slot,
            active=state.stable_slot, window_s=window_s,
            min_requests=policy.gates.min_requests, baselines=dict(state.baselines),
            model=model, stream=self.stream, shadow=ShadowSource(lambda: figures),
            step_s=self.clock() - state.step_entered_at if state.step_entered_at else None,
        )
        if shadowing:
            gate_round = dataclasses.replace(
                gate_round, evidence={"shadow": figures.as_dict() if figures else None})
        return GatesMeasured(gate_round.as_dict())

    def _mark_promoted(self, state: RolloutState) -> None:
        name, version = state.model.split(":", 1)
        try:
            if state.stable_model:
                old_name, old_version = state.stable_model.split(":", 1)
                self.registry.set_stage(old_name, old_version, Stage.STANDBY,
                                        reason=f"replaced by {state.model}; kept warm")
            self.registry.set_stage(name, version, Stage.ACTIVE, reason=f"promoted by {state.name}",
                                    slot=state.candidate_slot)
        except RegistryError as exc:
            log.error("registry update after promotion failed: %s", exc)

    def _mark_failed(self, state: RolloutState, reason: str, stage: Stage) -> None:
        """The candidate ``failed`` (validation) or ``rolled_back`` (traffic taken back);
        the stable version active again."""
        name, version = state.model.split(":", 1)
        try:
            self.registry.set_stage(name, version, stage, reason=reason)
            if state.stable_model:
                old_name, old_version = state.stable_model.split(":", 1)
                if self.registry.get(old_name, old_version).stage != Stage.ACTIVE:
                    self.registry.set_stage(old_name, old_version, Stage.ACTIVE,
                                            reason=f"restored by {state.name}",
                                            slot=state.stable_slot)
        except RegistryError as exc:
            log.error("registry update after rollback failed: %s", exc)

    def describe(self) -> dict[str, Any] | None:
        state = self.current()
        if state is None:
            return None
        policy = policy_of(state)
        data = state.as_dict()
        data.pop("policy")
        data["steps"] = [{"weight": s.weight, "bake_s": s.bake_s, "approval": s.approval,
                          **({"shadow": s.shadow} if s.shadow else {})}
                         for s in policy.steps]
        data["latest_round"] = state.rounds[-1] if state.rounds else None
        # The shadow step's comparison now, or the last one this rollout's rounds kept.
        figures = self.plane.shadow_figures() if self.busy else None
        data["shadow"] = figures.as_dict() if figures is not None else state.last_shadow()
        data["now"] = self.clock()
        data["commands"] = [str(c) for c in available_commands(state, data["now"])]
        return data


def _failure_event(state: RolloutState, action: Action, message: str) -> Event:
    if isinstance(action, Deploy):
        return DeployFinished(False, message)
    if isinstance(action, Validate):
        return ValidationFinished(False, f"validation errored: {message}")
    if isinstance(action, PushWeights):
        return WeightsPushed(action.weight, False, 0.0, message)
    assert isinstance(action, MeasureGates)
    measurements = tuple(
        Measurement(m.name, Phase.ERROR, f"measurement errored: {message}", dry_run=m.dry_run)
        for m in policy_of(state).gates.metrics)
    return GatesMeasured(GateRound(time.time(), action.window_s, measurements).as_dict())


def _actions_to_resume(state: RolloutState) -> list[Action]:
    """What was in flight when the control plane stopped, to be done again (each is
    idempotent). Baking simply continues on the next tick (a shadow step's copies pushed
    again first)."""
    phase = state.phase
    if phase is RolloutPhase.DEPLOYING:
        return [Deploy()]
    if phase is RolloutPhase.VALIDATING:
        return [Validate()]
    if phase is RolloutPhase.ROLLING_BACK:
        return [PushWeights(state.target_weight)]
    steps = policy_of(state).steps
    shadow = steps[state.step].shadow if 0 <= state.step < len(steps) else 0.0
    if phase is RolloutPhase.SHIFTING or (
            shadow and phase in (RolloutPhase.BAKING, RolloutPhase.PAUSED)):
        # A shadow step's copies live in the control plane that pushed them: a restarted
        # (or newly leading) one pushes them again (the machine ignores the answer while
        # baking).
        return [PushWeights(state.target_weight, shadow)]
    return []
