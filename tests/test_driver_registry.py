"""The rollout driver's edges: commands when no rollout runs in this process (after a
restart, after the end), what the registry says after a rollback or a promotion, the real
deploy step, describe(), and the log line of decisions stored late."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from tests.test_deploy_units import FakeTriton
from tests.test_driver import Controller, FakePlane, FlakyStore, Healthy, policy, until
from tests.zoo import write_model
from triton_slots.registry import LocalRegistry, Stage
from triton_slots.slot import Endpoint, Slot
from turnout.controller.driver import RolloutController
from turnout.controller.state import RolloutPhase, RolloutState, TransitionError
from turnout.policy import load_text
from turnout.store import StoreUnavailable

P = RolloutPhase
THREE = "[{weight: 20, bake: 1h}, {weight: 50, bake: 1h}, {weight: 100, bake: 1h}]"


@pytest.fixture
def env(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "registry")
    for version in ("v1", "v2"):
        registry.push(write_model(tmp_path / version, "pair"), name="pair", version=version)
    registry.set_stage("pair", "v1", Stage.ACTIVE, slot="blue")
    plane, store = FakePlane(), FlakyStore(tmp_path / "state.db")
    controller = Controller(plane, store, registry=registry, provider=Healthy(), tick_s=0.01)
    yield controller, plane, store, registry


def fresh(controller: RolloutController, plane, store, registry) -> Controller:
    """Another controller process on the same store: no rollout running in it."""
    return Controller(plane, store, registry=registry, provider=Healthy(), tick_s=0.01)


async def test_commands_with_no_rollout_at_all_are_refused(env):
    controller, *_ = env
    with pytest.raises(TransitionError, match=r"^no rollout to act on$"):
        await controller.command("abort", actor="sre")


async def test_after_the_end_only_a_rollback_of_a_promotion_is_taken(env):
    controller, plane, store, registry = env
    await controller.apply(load_text(policy()), actor="t")
    await until(controller, {P.PROMOTED})
    await controller.stop()
    assert (registry.get("pair", "v2").stage, registry.get("pair", "v1").stage) == \
        (Stage.ACTIVE, Stage.STANDBY)
    other = fresh(controller, plane, store, registry)
    for name in ("pause", "abort", "promote"):
        with pytest.raises(TransitionError, match=f"^rollout d is promoted; nothing to {name}$"):
            await other.command(name, actor="sre")
    back = await other.command("rollback", actor="ana")
    assert back.phase is P.ROLLING_BACK
    done = await until(other, {P.ROLLED_BACK})
    await other.stop()
    # The registry: the new version rolled back with the reason (an operator's decision,
    # not a failure of the model), the old one active again.
    v1, v2 = registry.get("pair", "v1"), registry.get("pair", "v2")
    assert (v2.stage, v2.stage_reason) == (
        Stage.ROLLED_BACK, "rolled_back by an operator: rollback after promotion requested "
                           "by ana")
    assert (v1.stage, v1.slot, v1.stage_reason) == (Stage.ACTIVE, "blue", "restored by d")
    assert done.applied_weight == 0 and plane.weights.green == 0
    # Finished again: nothing more to roll back.
    with pytest.raises(TransitionError, match=r"^rollout d is rolled_back; nothing to rollback$"):
        await fresh(controller, plane, store, registry).command("rollback", actor="ana")


async def test_a_rollback_before_promotion_leaves_the_active_version_alone(env):
    controller, _plane, _store, registry = env
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    await controller.command("abort", actor="ops")
    await until(controller, {P.ABORTED})
    await controller.stop()
    v1, v2 = registry.get("pair", "v1"), registry.get("pair", "v2")
    assert (v2.stage, v2.stage_reason) == (
        Stage.ROLLED_BACK, "aborted by an operator (abort): abort requested by ops")
    assert (v1.stage, v1.slot) == (Stage.ACTIVE, "blue")
    assert v1.stage_reason != "restored by d"


async def test_promote_without_full_moves_one_step_and_with_full_to_the_last(env):
    controller, plane, *_ = env
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    state = await controller.command("promote", actor="lee")
    assert state.step == 1 and state.target_weight == 50
    await until(controller, {P.BAKING})
    state = await controller.command("promote", actor="lee", full=True)
    assert state.step == 2 and state.target_weight == 100
    await until(controller, {P.PROMOTED})
    assert [p[0]["green"] for p in plane.pushes] == [20, 50, 100]
    await controller.stop()


async def test_health_known_before_a_rollout_resumes_counts_from_its_start(env):
    controller, plane, store, registry = env
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    await controller.stop()
    other = fresh(controller, plane, store, registry)
    other.slot_health("green", 0, 2)  # seen before the rollout is resumed in this process
    assert other.health["green"].total == 2
    await other.start()
    done = await until(other, {P.ROLLED_BACK})
    assert done.reason.startswith("0% on pair:v2")
    assert registry.get("pair", "v2").stage_reason == \
        "rolled_back for its health: candidate slot green unhealthy: 0/2 servers ready at 20%"
    await other.stop()
    other.slot_health("green", 2, 2)  # after the end: remembered, nothing to act on
    assert other.health["green"].healthy == 2 and other.current().phase is P.ROLLED_BACK


async def test_describe_says_phase_steps_and_latest_round(env):
    controller, *_ = env
    assert controller.describe() is None
    before = time.time()
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    data = controller.describe()
    assert "policy" not in data
    assert data["steps"] == [{"weight": 20, "bake_s": 3600.0, "approval": False},
                             {"weight": 50, "bake_s": 3600.0, "approval": False},
                             {"weight": 100, "bake_s": 3600.0, "approval": False}]
    assert data["phase"] == "baking" and data["model"] == "pair:v2"
    assert before <= data["now"] <= time.time()
    await until_round(controller)
    data = controller.describe()
    assert data["latest_round"] == controller.current().rounds[-1]
    assert data["latest_round"]["measurements"][0]["metric"] == "errors"
    # What the dashboard offers: the commands the machine accepts now, at this clock.
    assert data["commands"] == ["pause", "promote", "abort", "rollback"]
    await controller.command("promote", actor="t", full=True)
    await until(controller, {P.PROMOTED})
    assert controller.describe()["commands"] == ["rollback"]  # inside the keep-warm window
    await controller.stop()


async def until_round(controller: RolloutController, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not controller.current().rounds:
        assert time.monotonic() < deadline, "no gate round"
        await asyncio.sleep(0.01)


async def test_a_decision_stored_late_is_logged(env, caplog):
    controller, _plane, store, _ = env
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    store.failing = True
    with caplog.at_level(logging.INFO, logger="turnout.controller"):
        await controller.command("abort", actor="sre")
        await until(controller, {P.ABORTED})
        store.failing = False
        deadline = time.monotonic() + 5
        while store.latest_rollout()["phase"] != "aborted":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    await controller.stop()
    assert "rollout d: stored a decision taken while the store failed (rolling_back)" in \
        caplog.text
    assert "rollout d: stored a decision taken while the store failed (aborted)" in \
        caplog.text


class Deploying(RolloutController):
    """The real deploy step, into a slot whose servers are a fake Triton."""


def _state(model: str = "pair:v2") -> RolloutState:
    return RolloutState(id="x", name="d", model=model, digest="", candidate_slot="green",
                        stable_slot="blue", stable_model="pair:v1",
                        policy=load_text(policy()).document, source="p.yaml",
                        created_at=0.0, deadline_at=60.0)


def test_the_deploy_step_deploys_into_the_candidate_slot(env, tmp_path):
    _, plane, store, registry = env
    triton = FakeTriton(tmp_path / "green-repo")
    try:
        plane.slot = lambda name: Slot(name, (triton.endpoint,), tmp_path / "green-repo")
        controller = Deploying(plane, store, registry=registry, provider=Healthy())
        done = controller._deploy(_state())
        assert done.ok and done.digest == registry.get("pair", "v2").digest
        assert plane.held == ["green"], "the deploy did not hold its slot"
        assert done.message.startswith("ready on 1 server(s) in ") and done.message[-1] == "s"
        dead = Endpoint("127.0.0.1", 1, 1, 1)
        plane.slot = lambda name: Slot(name, (dead,), tmp_path / "green-repo")
        failed = controller._deploy(_state())
        assert not failed.ok and failed.message.startswith(
            "deploy to green failed on 1/1 servers: ")
    finally:
        triton.close()
    # A slot without a shared repository deploys over the repository API; without servers
    # it cannot deploy at all.
    plane.slot = lambda name: Slot(name)
    none = Deploying(plane, store, registry=registry, provider=Healthy())._deploy(_state())
    assert (none.ok, none.message) == (False, "slot green has no Triton servers")


async def test_the_audit_log_records_who_what_weights_and_digests(env):
    controller, _plane, store, registry = env
    before = time.time()
    state = await controller.apply(load_text(policy(), "p.yaml"), actor="ana")
    await until(controller, {P.PROMOTED})
    await controller.stop()
    v1, v2 = registry.get("pair", "v1").digest, registry.get("pair", "v2").digest
    entries = sorted(store.history(rollout=state.id), key=lambda e: e.seq)
    first = entries[0]
    assert (first.kind, first.actor, first.phase_to, first.weights, first.digests,
            first.message) == (
        "apply", "ana", "pending", {"blue": 100, "green": 0},
        {"pair:v2": v2, "pair:v1": v1}, "applied p.yaml: pair:v2 onto green (stable blue)")
    pushes = [e for e in entries if e.kind == "weights"]
    assert [(e.weights, e.message) for e in pushes] == [
        ({"blue": 80, "green": 20}, "push 20% to pair:v2 on green"),
        ({"blue": 0, "green": 100}, "push 100% to pair:v2 on green")]
    assert all(e.digests == {"pair:v2": v2, "pair:v1": v1} for e in entries)
    assert all(before <= e.at <= time.time() for e in entries)
    baking = next(e for e in entries if e.phase_to == "baking")
    # A note carries the weights every Envoy had ACKed when it was written.
    assert baking.weights == {"blue": 80, "green": 20} and baking.phase_from == "shifting"
    promoted = entries[-1]
    assert (promoted.phase_from, promoted.phase_to, promoted.weights) == \
        ("baking", "promoted", {"blue": 0, "green": 100})
    assert (registry.get("pair", "v2").stage, registry.get("pair", "v2").stage_reason,
            registry.get("pair", "v2").slot) == (Stage.ACTIVE, "promoted by d", "green")
    assert (registry.get("pair", "v1").stage, registry.get("pair", "v1").stage_reason) == \
        (Stage.STANDBY, "replaced by pair:v2; kept warm")


async def test_apply_refuses_what_cannot_start_and_changes_nothing(env, tmp_path):
    from turnout.controller.driver import RolloutConflict
    from turnout.errors import ConfigError

    controller, plane, store, registry = env
    unknown = load_text(policy().replace("pair:v2", "pair:v9"), "p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: spec\.model: .*v9"):
        await controller.apply(unknown, actor="t")
    with pytest.raises(RolloutConflict, match=r"^pair:v1 already serves from blue$"):
        await controller.apply(load_text(policy().replace("pair:v2", "pair:v1")), actor="t")
    misfit = load_text(policy().replace(
        "validation: {checks: []}", "validation: {checks: [], inputs: {nope: {shape: [1]}}}"),
        "p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: spec\.validation\.inputs\.nope: "):
        await controller.apply(misfit, actor="t")
    record = registry.get("pair", "v2")
    (record.path / "config.pbtxt").write_text("garbage {")
    with pytest.raises(ConfigError, match=r"^p\.yaml: spec\.model: "):
        await controller.apply(load_text(policy(), "p.yaml"), actor="t")
    assert store.latest_rollout() is None and plane.pushes == []


async def test_a_split_traffic_refuses_a_new_rollout(env):
    from turnout.controller.driver import RolloutConflict
    from turnout.weights import Weights

    controller, plane, store, _ = env
    plane.weights = Weights.with_green(30)
    with pytest.raises(RolloutConflict, match=r"^traffic is split \{'blue': 70, 'green': 30\}; "
                                              r"a rollout starts from one slot at 100%$"):
        await controller.apply(load_text(policy()), actor="t")
    assert store.latest_rollout() is None


def test_weights_follow_the_candidate_slot():
    from turnout.controller.driver import weights_for
    from turnout.weights import Weights

    state = _state()
    assert weights_for(state, 30) == Weights(blue=70, green=30)
    state.candidate_slot, state.stable_slot = "blue", "green"
    assert weights_for(state, 30) == Weights(blue=30, green=70)


@pytest.mark.parametrize("phase, pushes, safe", [
    ("rolling_back", [], True), ("rolled_back", [], True), ("aborted", [], True),
    ("failed", [], True), ("baking", [0], True), ("baking", [], False),
    ("shifting", [20], False), ("paused", [], False), ("promoted", [], False)])
def test_what_may_go_out_while_the_store_fails(phase, pushes, safe):
    from turnout.controller.driver import _safe_direction
    from turnout.controller.state import PushWeights

    old = _state()
    new = _state()
    new.phase = P(phase)
    assert _safe_direction(old, new, [PushWeights(w) for w in pushes]) is safe


async def test_a_resumed_rollout_says_where_it_resumed(env, caplog):
    controller, plane, store, registry = env
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    await controller.stop()
    other = fresh(controller, plane, store, registry)
    with caplog.at_level(logging.INFO, logger="turnout.controller"):
        await other.start()
    await asyncio.sleep(0.05)
    await other.stop()
    assert "resuming rollout d at baking (step 1, 20%)" in caplog.messages
    resume = [e for e in store.history() if e.kind == "resume"]
    assert len(resume) == 1
    entry = resume[0]
    assert entry.rollout == other.current().id
    assert (entry.actor, entry.phase_from, entry.phase_to, entry.weights) == \
        ("controller", "baking", "baking", {"blue": 80, "green": 20})
    assert entry.message == ("control plane restarted; resuming at baking, step 1, serving "
                             "{'blue': 80, 'green': 20}")


async def left_pending(controller: RolloutController, store) -> None:  # type: ignore[no-untyped-def]
    """A rollout the store says is pending (stopped before its start was handled)."""
    await controller.apply(load_text(policy()), actor="t")
    await controller.stop()
    data = store.active_rollout()
    data["phase"] = "pending"
    store.commit(rollout=(data["id"], "pending", False, data))


async def test_a_pending_rollout_is_started_when_resumed(env):
    controller, plane, store, registry = env
    await left_pending(controller, store)
    other = fresh(controller, plane, store, registry)
    await other.start()
    assert (await until(other, {P.PROMOTED})).phase is P.PROMOTED
    await other.stop()


async def test_a_failing_write_is_retried_with_back_off_before_giving_up(env, caplog):
    controller, _plane, store, _ = env
    await controller.apply(load_text(policy(steps=THREE)), actor="t")
    await until(controller, {P.BAKING})
    calls = []
    real = store.commit

    def flaky(**kw):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise StoreUnavailable("state store: database is locked")
        real(**kw)

    store.commit = flaky
    with caplog.at_level(logging.ERROR, logger="turnout.controller"):
        state = await controller.command("pause", actor="sre")
    assert state.phase is P.PAUSED and len(calls) == 3
    assert calls[1] - calls[0] >= 0.04 and calls[2] - calls[1] >= 0.09  # 50 ms, doubling
    assert "state write failed (attempt 1/4): state store: database is locked" in caplog.text
    assert "state write failed (attempt 2/4)" in caplog.text
    calls.clear()

    def full(**kw):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic())
        raise StoreUnavailable("full")

    store.commit = full
    with pytest.raises(StoreUnavailable):
        await controller.command("resume", actor="sre")
    assert len(calls) == 4  # COMMIT_ATTEMPTS, then the operator is told
    store.commit = real
    await controller.stop()


async def test_a_rollout_resumes_even_when_its_resume_note_cannot_be_written(env):
    controller, plane, store, registry = env
    await left_pending(controller, store)
    store.failing = True
    other = fresh(controller, plane, store, registry)
    await other.start()  # the note is lost, the rollout is not
    store.failing = False
    assert (await until(other, {P.PROMOTED})).phase is P.PROMOTED
    await other.stop()


def test_the_deploy_step_logs_its_progress(env, tmp_path, caplog):
    _, plane, store, registry = env
    triton = FakeTriton(tmp_path / "green-repo")
    try:
        plane.slot = lambda name: Slot(name, (triton.endpoint,), tmp_path / "green-repo")
        with caplog.at_level(logging.INFO, logger="turnout.controller"):
            done = Deploying(plane, store, registry=registry, provider=Healthy())._deploy(
                _state())
    finally:
        triton.close()
    assert done.ok is True
    assert any(m.startswith("deploy: staging pair:v2 (") for m in caplog.messages)
    failed = Deploying(plane, store, registry=registry, provider=Healthy())._deploy(
        _state("pair:v9"))
    assert failed.ok is False


def test_a_gate_round_asks_about_the_candidate_slot_and_the_model(env):
    _, plane, store, registry = env
    provider, stream = Healthy(), Healthy()
    controller = RolloutController(plane, store, registry=registry, provider=provider,
                                   stream=stream, clock=lambda: 130.0)
    state = _state()
    state.step_entered_at, state.baselines = 100.0, {"errors": 0.25}
    event = controller._measure(state, 6.0)
    (m,) = event.round["measurements"]
    assert m["metric"] == "errors" and m["phase"] == "Successful"
    assert event.round["window_s"] == 6.0
    assert any('slot="green"' in q and 'model=~"pair"' in q for q in provider.asked)
    assert not any('slot="blue"' in q for q in provider.asked)
    assert state.baselines == {"errors": 0.25}  # the round works on a copy


def test_registry_failures_after_the_end_are_logged_not_raised(env, caplog):
    from triton_slots.registry import RegistryError

    _, plane, store, registry = env

    class Refusing:
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(registry, name)

        def set_stage(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RegistryError("registry is read-only")

    controller = RolloutController(plane, store, registry=Refusing(), provider=Healthy())
    with caplog.at_level(logging.ERROR, logger="turnout.controller"):
        controller._mark_promoted(_state())
        controller._mark_failed(_state(), "gate failed", Stage.ROLLED_BACK)
    assert caplog.messages == [
        "registry update after promotion failed: registry is read-only",
        "registry update after rollback failed: registry is read-only"]


async def test_apply_onto_the_warm_standby_needs_force_and_records_who_forced(env, tmp_path):
    """The guard `deploy` keeps holds for `apply` too (issue 29, finding 2)."""
    from turnout.controller.guard import SlotInUse

    controller, plane, store, registry = env
    await controller.apply(load_text(policy()), actor="t")
    first = await until(controller, {P.PROMOTED})  # v2 on green; v1 kept warm on blue
    registry.push(write_model(tmp_path / "v3", "pair"), name="pair", version="v3")
    third = load_text(policy().replace("pair:v2", "pair:v3"))
    entries = len(store.history(limit=1000))
    with pytest.raises(SlotInUse, match=r"^slot blue is the standby kept warm for an instant "
                                        r"rollback of d for 1800 s more; applying there gives "
                                        r"that rollback up: wait, or pass --force$"):
        await controller.apply(third, actor="sre")
    assert len(store.history(limit=1000)) == entries
    assert controller.current().id == first.id and plane.weights.as_dict()["green"] == 100
    state = await controller.apply(third, actor="sre", force=True)
    assert state.candidate_slot == "blue"
    forced, applied = store.history(rollout=state.id, limit=1000)[:2]
    assert (forced.kind, forced.actor, applied.kind) == ("force", "sre", "apply")
    assert forced.message.startswith("--force by sre: slot blue is the standby kept warm for "
                                     "an instant rollback of d for ")
    assert forced.message.endswith(" s more; that rollback is given up")


async def test_apply_after_the_keep_warm_window_needs_no_force(env, tmp_path):
    controller, _plane, store, registry = env
    await controller.apply(load_text(policy(extra="\n  rollback: {keepWarm: 50ms}")), actor="t")
    await until(controller, {P.PROMOTED})
    await asyncio.sleep(0.1)
    registry.push(write_model(tmp_path / "v3", "pair"), name="pair", version="v3")
    state = await controller.apply(load_text(policy().replace("pair:v2", "pair:v3")),
                                   actor="sre")
    assert [e.kind for e in store.history(rollout=state.id)][:1] == ["apply"]


def test_a_validation_failure_is_failed_and_traffic_taken_back_is_rolled_back(env):
    """The registry tells a model's failure from a decision to take it back."""
    import types

    from turnout.controller.state import MarkFailed, MarkRolledBack

    controller, _plane, _store, registry = env
    job = types.SimpleNamespace(state=_state())
    controller._execute(job, MarkFailed("validation failed: parity"))
    v2 = registry.get("pair", "v2")
    assert (v2.stage, v2.stage_reason) == (Stage.FAILED, "validation failed: parity")
    registry.set_stage("pair", "v2", Stage.CANDIDATE, slot="green")
    controller._execute(job, MarkRolledBack("rolled_back by a gate: gate failed at 10%"))
    v2 = registry.get("pair", "v2")
    assert (v2.stage, v2.stage_reason) == (Stage.ROLLED_BACK,
                                           "rolled_back by a gate: gate failed at 10%")
    assert registry.get("pair", "v1").stage == Stage.ACTIVE
