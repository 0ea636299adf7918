"""The rollout driver in isolation: a fake traffic plane (the other side of its small
interface), a real SQLite store that can be made to fail, a real registry. Store
failures, push timeouts and stragglers, crashing workers, a dead candidate."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.zoo import write_model
from triton_slots.registry import LocalRegistry
from triton_slots.slot import Slot
from turnout.controller.driver import RolloutController
from turnout.controller.state import DeployFinished, RolloutPhase, RolloutState
from turnout.policy import load_text
from turnout.store import Fenced, Outgoing, StoreUnavailable
from turnout.store import SqliteStore as Store
from turnout.weights import Weights
from xds_server import Convergence
from xds_server.cache import NodeOutcome

P = RolloutPhase


def policy(*, steps: str = "[{weight: 20, bake: 50ms}, {weight: 100, bake: 50ms}]",
           extra: str = "") -> str:
    return f"""
apiVersion: turnout/v1
kind: Rollout
metadata: {{name: d}}
spec:
  model: pair:v2
  validation: {{checks: []}}
  strategy: {{steps: {steps}}}
  gates:
    interval: 50ms
    window: 1s
    minRequests: 1
    failureLimit: 0
    metrics: [{{name: errors, builtin: error_rate, max: 0.01}}]
  progressDeadline: 1m{extra}
"""


class FakePlane:
    """Publishes nothing; answers each push as scripted (all ACK by default)."""

    def __init__(self) -> None:
        self.weights = Weights.with_green(0)
        self.ingress_address = "127.0.0.1:1"
        self.preview_key = "test-key"
        self.pushes: list[tuple[dict[str, int], float, bool]] = []
        self.nodes = ["envoy-a", "envoy-b"]
        self.silent: set[str] = set()
        self.delay = 0.0
        self.held: list[str] = []  # slots a deploy held, in order
        self.shadows: list[object] = []  # the shadow of each push (None: none)
        self.figures: object = None  # what shadow_figures() answers

    def shadow_figures(self):  # type: ignore[no-untyped-def]
        return self.figures

    def slot(self, name: str) -> Slot:
        return Slot(name)

    @contextlib.contextmanager
    def deploying(self, name: str) -> Iterator[None]:
        self.held.append(name)
        yield

    async def apply_weights(self, weights: Weights, *, timeout: float | None = None,
                            quorum: float = 1.0, early: bool = False,
                            shadow: object = None) -> Convergence:
        self.weights = weights
        self.pushes.append((weights.as_dict(), quorum, early))
        self.shadows.append(shadow)
        await asyncio.sleep(self.delay)
        outcomes = tuple(
            NodeOutcome(n, i, "timeout" if n in self.silent else "acked",
                        None if n in self.silent else 0.001)
            for i, n in enumerate(self.nodes))
        return Convergence("g", {}, 0.001, outcomes, quorum)


class FlakyStore(Store):
    """The real store, with a switch that makes every write fail like a full disk."""

    failing = False

    def commit(self, **kw):  # type: ignore[no-untyped-def]
        if self.failing:
            raise StoreUnavailable("state store: database or disk is full")
        super().commit(**kw)


class Healthy:
    """A metrics provider: 100 requests, no errors, for every slot; records each query."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def query_value(self, promql: str) -> float:
        self.asked.append(promql)
        return 100.0 if "upstream_rq_total" in promql else 0.0


class Controller(RolloutController):
    """Deploys nothing: the deploy's outcome is scripted (validation is off)."""

    deploy_outcome: DeployFinished | Exception = DeployFinished(True, "ok", "d")

    def _deploy(self, state: RolloutState) -> DeployFinished:
        if isinstance(self.deploy_outcome, Exception):
            raise self.deploy_outcome
        return self.deploy_outcome


@pytest.fixture
def env(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "registry")
    registry.push(write_model(tmp_path / "pair", "pair"), name="pair", version="v2")
    plane, store = FakePlane(), FlakyStore(tmp_path / "state.db")
    controller = Controller(plane, store, registry=registry, provider=Healthy(),
                            tick_s=0.01)
    yield controller, plane, store


async def until(controller: RolloutController, phases: set[RolloutPhase],
                timeout: float = 5.0) -> RolloutState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = controller.current()
        if state is not None and state.phase in phases:
            return state
        await asyncio.sleep(0.01)
    raise AssertionError(f"still {controller.current().phase if controller.current() else None}")


async def baking_at_20(controller: RolloutController) -> RolloutState:
    """Start a rollout that bakes at 20 % for an hour and wait until it bakes."""
    await controller.apply(load_text(policy(steps="[{weight: 20, bake: 1h}, "
                                            "{weight: 100, bake: 1s}]")), actor="t")
    return await until(controller, {P.BAKING})


async def test_a_good_rollout_is_promoted_through_the_fake_plane(env):
    controller, plane, store = env
    await controller.apply(load_text(policy()), actor="t")
    done = await until(controller, {P.PROMOTED})
    assert [p[0]["green"] for p in plane.pushes] == [20, 100]
    assert store.weights().green == 100 and done.applied_weight == 100
    await controller.stop()


async def test_abort_goes_out_while_the_store_fails_and_is_recorded_after(env):
    controller, plane, store = env
    await baking_at_20(controller)
    store.failing = True
    await controller.command("abort", actor="sre")
    done = await until(controller, {P.ABORTED})
    assert plane.weights.green == 0  # traffic went back although nothing could be written
    assert done.phase is P.ABORTED
    assert store.latest_rollout()["phase"] == "baking"  # the store still says baking
    store.failing = False
    await asyncio.sleep(0.1)  # the next tick writes what was decided meanwhile
    assert store.latest_rollout()["phase"] == "aborted"
    kinds = [(e.actor, e.phase_to) for e in store.history()]
    assert ("sre", "rolling_back") in kinds and ("controller", "aborted") in kinds
    assert store.weights().green == 0
    await controller.stop()


async def test_a_deposed_leader_decides_nothing_that_reaches_the_plane(env):
    controller, plane, store = env
    assert store.hold_leadership("a")
    await baking_at_20(controller)
    pushed = list(plane.pushes)
    assert Store(store.path).hold_leadership("b")  # another control plane took over
    # Unlike a failing store (the abort above goes out before it is stored), a refused
    # write is never acted on: not even a move back to the stable slot.
    with pytest.raises(Fenced, match="no longer leads"):
        await controller.command("abort", actor="sre")
    await asyncio.sleep(0.2)  # ticks decide nothing either
    assert plane.pushes == pushed and plane.weights.green == 20
    assert store.latest_rollout()["phase"] == "baking" and store.weights().green == 20
    await controller.stop()


async def test_notices_are_stored_in_the_transaction_of_their_decision(env):
    controller, _, store = env

    def told(old: RolloutState | None, new: RolloutState) -> list[Outgoing]:
        return [Outgoing("r", {"url": "http://r"},
                         {"from": str(old.phase) if old else None, "to": str(new.phase)})]

    controller.outbox = told
    await baking_at_20(controller)
    store.failing = True  # decided now, stored (with its notices) once the store works
    await controller.command("abort", actor="sre")
    await until(controller, {P.ABORTED})
    assert [d.notice["to"] for d in store.pending_deliveries()][-1] == "baking"
    store.failing = False
    await asyncio.sleep(0.1)
    moves = [(d.notice["from"], d.notice["to"]) for d in store.pending_deliveries()]
    assert moves[0] == (None, "pending")  # the new rollout's, written with it
    assert moves[-2:] == [("baking", "rolling_back"), ("rolling_back", "aborted")]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(moves))  # no gap
    await controller.stop()


async def test_a_command_that_cannot_be_stored_is_refused_and_changes_nothing(env):
    controller, plane, store = env
    before = await baking_at_20(controller)
    store.failing = True
    with pytest.raises(StoreUnavailable, match="nothing was changed"):
        await controller.command("pause", actor="sre")
    assert controller.current().phase is P.BAKING and plane.weights.green == 20
    store.failing = False
    await controller.command("pause", actor="sre")
    assert controller.current().phase is P.PAUSED
    assert before.id == controller.current().id
    await controller.stop()


async def test_a_worker_outcome_is_kept_until_it_can_be_stored(env):
    controller, plane, store = env
    plane.delay = 0.2
    await controller.apply(load_text(policy()), actor="t")
    await until(controller, {P.SHIFTING})
    store.failing = True  # the push's answer arrives while writes fail
    await asyncio.sleep(0.6)
    assert controller.current().phase is P.SHIFTING  # not dropped, not applied
    store.failing = False
    await until(controller, {P.PROMOTED})
    await controller.stop()


async def test_a_straggler_does_not_stop_a_step_under_a_quorum(env):
    controller, plane, _store = env
    plane.nodes = [f"envoy-{i}" for i in range(100)]
    plane.silent = {"envoy-7"}
    await controller.apply(load_text(policy(extra="\n  convergence: {minAcked: 99%, "
                                                 "timeout: 1s}")), actor="t")
    await until(controller, {P.PROMOTED})
    assert {q for _, q, _ in plane.pushes} == {0.99}
    await controller.stop()


async def test_without_a_quorum_a_straggler_pauses_and_is_named(env):
    controller, plane, _store = env
    plane.silent = {"envoy-b"}
    await controller.apply(load_text(policy()), actor="t")
    paused = await until(controller, {P.PAUSED})
    assert "envoy-b: timeout" in paused.reason and "envoy-a" not in paused.reason
    await controller.stop()


async def test_rollbacks_complete_on_the_quorum_and_never_wait_for_stragglers(env):
    controller, plane, _store = env
    await baking_at_20(controller)
    await controller.command("rollback", actor="sre")
    await until(controller, {P.ROLLED_BACK})
    assert plane.pushes[-1] == ({"blue": 100, "green": 0}, 1.0, True)  # early: quorum
    await controller.stop()


async def test_a_dead_candidate_rolls_back_at_once(env):
    controller, _plane, store = env
    await baking_at_20(controller)
    controller.slot_health("blue", 0, 2)  # the stable slot is not the candidate
    await asyncio.sleep(0.05)
    assert controller.current().phase is P.BAKING
    controller.slot_health("green", 0, 2)
    done = await until(controller, {P.ROLLED_BACK})
    assert "candidate slot green unhealthy: 0/2 servers ready at 20%" in \
        next(e.message for e in store.history() if e.phase_to == "rolling_back")
    assert done.applied_weight == 0
    await controller.stop()


async def test_a_dead_candidate_pauses_when_the_policy_says_so(env):
    controller, plane, _store = env
    await controller.apply(load_text(policy(
        steps="[{weight: 20, bake: 1h}, {weight: 100, bake: 1s}]",
        extra="\n  rollback: {onCandidateUnhealthy: pause}")), actor="t")
    await until(controller, {P.BAKING})
    controller.slot_health("green", 0, 1)
    paused = await until(controller, {P.PAUSED})
    assert "policy: pause" in paused.reason and plane.weights.green == 20
    await controller.stop()


async def test_a_crashing_deploy_fails_the_rollout_without_traffic(env):
    controller, plane, _store = env
    controller.deploy_outcome = RuntimeError("boom")
    await controller.apply(load_text(policy()), actor="t")
    failed = await until(controller, {P.FAILED})
    assert "RuntimeError: boom" in failed.reason and plane.pushes == []
    await controller.stop()


async def test_abort_works_while_rolling_back(env):
    controller, plane, _store = env
    await baking_at_20(controller)
    plane.delay = 0.3
    await controller.command("rollback", actor="sre")
    await controller.command("abort", actor="sre")  # accepted: already going to 0 %
    assert (await until(controller, {P.ABORTED})).phase is P.ABORTED
    await controller.stop()


async def test_a_second_apply_while_one_runs_is_refused(env):
    controller, plane, _store = env
    await baking_at_20(controller)
    from turnout.controller.driver import RolloutConflict

    with pytest.raises(RolloutConflict, match="abort it or wait"):
        await controller.apply(load_text(policy()), actor="t")
    assert plane.pushes[-1][0]["green"] == 20
    await controller.stop()


@pytest.mark.parametrize("phase", ["deploying", "shifting", "baking", "rolling_back"])
async def test_a_restarted_controller_resumes_every_phase(env, phase):
    controller, plane, store = env
    plane.delay = 0.2 if phase == "shifting" else 0.0
    await controller.apply(load_text(policy(steps="[{weight: 20, bake: 300ms}, "
                                            "{weight: 100, bake: 100ms}]")), actor="t")
    if phase == "deploying":
        await controller.stop()  # before the deploy's outcome was handled
        data = store.active_rollout()
        data["phase"] = "deploying"
        store.commit(rollout=(data["id"], "deploying", False, data))
    else:
        await until(controller, {P(phase)} if phase != "rolling_back" else {P.BAKING})
        if phase == "rolling_back":
            plane.delay = 0.3
            await controller.command("rollback", actor="sre")
        await controller.stop()
    assert store.active_rollout()["phase"] == phase
    plane.delay = 0.0
    again = Controller(plane, store, registry=controller.registry, provider=Healthy(),
                       tick_s=0.01)
    await again.start()
    ending = {P.ROLLED_BACK} if phase == "rolling_back" else {P.PROMOTED}
    done = await until(again, ending)
    assert done.id == store.latest_rollout()["id"]
    assert any(e.kind == "resume" for e in store.history())
    await again.stop()


async def test_a_rollback_completes_despite_a_straggler_at_100_percent(env):
    controller, plane, _store = env
    await baking_at_20(controller)
    plane.silent = {"envoy-b"}  # stopped after the step: it never answers the rollback
    await controller.command("rollback", actor="sre")
    done = await until(controller, {P.ROLLED_BACK})
    assert done.applied_weight == 0
    assert sum(1 for w, _, _ in plane.pushes if w["green"] == 0) == 1  # no retry loop
    await controller.stop()


def test_each_crashed_action_becomes_its_failure_event():
    from turnout.controller.driver import _failure_event
    from turnout.controller.state import (
        Deploy,
        GatesMeasured,
        MeasureGates,
        PushWeights,
        Validate,
        ValidationFinished,
        WeightsPushed,
    )

    doc = load_text(policy(extra="")).document
    doc["spec"]["gates"]["metrics"].append({"name": "shadow", "builtin": "throughput_rps",
                                            "min": 1, "dryRun": True})
    state = RolloutState(id="r", name="d", model="pair:v2", digest="d", candidate_slot="green",
                         stable_slot="blue", stable_model=None, policy=doc, source="",
                         created_at=0.0)
    assert _failure_event(state, Deploy(), "OSError: disk") == DeployFinished(
        False, "OSError: disk")
    assert _failure_event(state, Validate(), "boom") == ValidationFinished(
        False, "validation errored: boom")
    assert _failure_event(state, PushWeights(20), "boom") == WeightsPushed(20, False, 0.0,
                                                                            "boom")
    measured = _failure_event(state, MeasureGates(4.0), "boom")
    assert isinstance(measured, GatesMeasured)
    assert measured.round["window_s"] == 4.0
    assert [(m["metric"], m["phase"], m["message"], m["dry_run"])
            for m in measured.round["measurements"]] == [
        ("errors", "Error", "measurement errored: boom", False),
        ("shadow", "Error", "measurement errored: boom", True)]


async def test_a_crashing_measurement_is_an_error_round_not_a_hang(env):
    controller, _plane, store = env

    class Broken:
        def query_value(self, promql: str) -> float:
            raise RuntimeError("provider bug")

    controller.provider = Broken()
    await controller.apply(load_text(policy(steps="[{weight: 20, bake: 1h}, "
                                            "{weight: 100, bake: 1s}]")), actor="t")
    paused = await until(controller, {P.PAUSED}, timeout=10)
    assert "consecutive metric errors" in paused.reason
    assert any("measurement errored" in e.message or "provider bug" in json_of(e)
               for e in store.history())
    await controller.stop()


def json_of(entry) -> str:
    import json

    return json.dumps(entry.evidence)


SHADOW_STEPS = "[{shadow: 25, bake: 300ms}, {weight: 100, bake: 50ms}]"
SHADOW_GATES = """
  gates:
    interval: 50ms
    window: 1s
    minRequests: 1
    failureLimit: 0
    metrics:
      - {name: disagreement, builtin: disagreement_rate, max: 0.01, source: shadow}
      - {name: errors, builtin: error_rate, max: 0.01}"""


def shadow_policy() -> str:
    text = policy(steps=SHADOW_STEPS)
    start = text.index("  gates:")
    end = text.index("  progressDeadline")
    return text[:start] + SHADOW_GATES.lstrip("\n") + "\n" + text[end:]


async def test_a_shadow_step_copies_then_stops_copying_and_judges_by_shadow_gates(env):
    from gates.shadow.compare import ShadowStats
    from turnout.topology import Shadow

    controller, plane, store = env
    plane.figures = ShadowStats(compared=100, disagreed=0)
    await controller.apply(load_text(shadow_policy()), actor="t")
    done = await until(controller, {P.PROMOTED})
    assert plane.shadows == [Shadow("green", 25.0, "test-key"), None]
    assert [w["green"] for w, _, _ in plane.pushes] == [0, 100]
    shadow_rounds = [e for e in store.history() if e.kind == "gates"
                     and (e.evidence or {}).get("step") == 0]
    assert shadow_rounds and all(
        [m["metric"] for m in e.evidence["measurements"]] == ["disagreement"]
        and e.evidence["evidence"]["shadow"]["compared"] == 100 for e in shadow_rounds)
    live_rounds = [e for e in store.history() if e.kind == "gates"
                   and (e.evidence or {}).get("step") == 1]
    assert live_rounds and all([m["metric"] for m in e.evidence["measurements"]] == ["errors"]
                               and "evidence" not in e.evidence for e in live_rounds)
    assert done.steps_log[0]["shadow"] == 25.0 and "shadow" not in done.steps_log[1]
    await controller.stop()


async def test_a_disagreeing_candidate_is_rolled_back_from_its_shadow_step(env):
    from gates.shadow.compare import ShadowStats

    controller, plane, store = env
    plane.figures = ShadowStats(compared=100, disagreed=30, examples=[
        {"request": "ab12", "model": "pair", "why": "Y: max abs diff 1 > 0.02"}])
    await controller.apply(load_text(shadow_policy()), actor="t")
    done = await until(controller, {P.ROLLED_BACK})
    assert done.reason.startswith("0% on pair:v2") and plane.shadows[-1] is None
    assert [w["green"] for w, _, _ in plane.pushes] == [0, 0]  # never a live weight
    [decided] = [e for e in store.history() if e.kind == "transition"
                 and e.phase_to == "rolling_back"]
    assert "disagreement: 0.3 > max 0.01" in decided.message
    assert decided.evidence["evidence"]["shadow"]["examples"][0]["request"] == "ab12"
    assert controller.describe()["shadow"]["disagreed"] == 30  # kept after the step
    await controller.stop()


async def test_a_restarted_controller_copies_again_in_its_shadow_step(env):
    from gates.shadow.compare import ShadowStats
    from turnout.topology import Shadow

    controller, plane, store = env
    plane.figures = None  # nothing compared yet: the step waits
    await controller.apply(load_text(shadow_policy().replace("bake: 300ms", "bake: 1h")),
                           actor="t")
    await until(controller, {P.BAKING})
    await controller.stop()
    plane.shadows.clear()
    again = Controller(plane, store, registry=controller.registry, provider=Healthy(),
                       tick_s=0.01)
    await again.start()
    deadline = time.monotonic() + 5
    while not plane.shadows and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert plane.shadows == [Shadow("green", 25.0, "test-key")]
    assert again.current().phase is P.BAKING  # the answer to the re-push changes nothing
    plane.figures = ShadowStats(compared=5, disagreed=0)
    await again.stop()
