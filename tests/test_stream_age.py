"""The bound on a long-lived stream's age: a policy's ``streamMaxAge`` (checked with its
line) while its rollout runs, else the stack's ``stream_max_age_s`` (0: no bound)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from turnout.config import ControlPlaneConfig
from turnout.controller.state import RolloutPhase, RolloutState
from turnout.controlplane import ControlPlane
from turnout.policy import PolicyError, load_text
from turnout.tokens import Role, mint

POLICY = ("apiVersion: turnout/v1\nkind: Rollout\nmetadata: {name: m}\n"
          "spec:\n  model: 'classifier:v2'\n")


def test_a_policy_may_bound_stream_age_and_a_wrong_bound_names_its_line():
    assert load_text(POLICY).stream_max_age_s is None
    assert load_text(POLICY + "  streamMaxAge: 45s\n").stream_max_age_s == 45.0
    assert load_text(POLICY + "  streamMaxAge: 2s\n").stream_max_age_s == 2.0
    assert load_text(POLICY + "  streamMaxAge: 24h\n").stream_max_age_s == 86400.0
    for bad in ("1s", "1500ms", "25h"):
        with pytest.raises(PolicyError) as info:
            load_text(POLICY + f"  streamMaxAge: {bad}\n", "p.yaml")
        assert [str(p) for p in info.value.problems] == [
            f"p.yaml:6: spec.streamMaxAge: streamMaxAge must be 2s..24h, not {bad}"]
    with pytest.raises(PolicyError, match=r"spec\.streamMaxAge"):
        load_text(POLICY + "  streamMaxAge: 45\n", "p.yaml")


def _plane(tmp_path, stack_bound: float) -> ControlPlane:
    admin, _ = mint("a", Role.ADMIN)
    config = ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                                stream_max_age_s=stack_bound)

    async def make() -> ControlPlane:
        return ControlPlane(config)
    return asyncio.run(make())


def _state(policy_text: str, phase: RolloutPhase) -> RolloutState:
    policy = load_text(policy_text)
    return RolloutState(id="r", name="m", model="classifier:v2", digest="d",
                        policy=policy.document, phase=phase, candidate_slot="green",
                        stable_slot="blue", stable_model="classifier:v1", source="p.yaml",
                        created_at=0.0)


@pytest.mark.parametrize(("stack_bound", "policy_tail", "phase", "busy", "expected"), [
    (120, "", RolloutPhase.BAKING, True, 120),  # no policy bound: the stack's
    (120, "  streamMaxAge: 30s\n", RolloutPhase.BAKING, True, 30),  # running: the policy's
    (120, "  streamMaxAge: 30s\n", RolloutPhase.PROMOTED, False, 120),  # finished: stack's
    (0, "", RolloutPhase.BAKING, True, None),  # 0: no bound at all
    (0, "  streamMaxAge: 300s\n", RolloutPhase.BAKING, True, 300),
])
def test_the_running_rollouts_bound_wins_over_the_stacks(tmp_path, stack_bound, policy_tail,
                                                         phase, busy, expected):
    plane = _plane(tmp_path, stack_bound)
    state = _state(POLICY + policy_tail, phase)
    plane.controller = SimpleNamespace(busy=busy, current=lambda: state)  # type: ignore[assignment]
    assert plane._stream_max_age_s() == expected
    routes = plane.desired_snapshot().resources(
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration")
    ages = {r.route.max_stream_duration.max_stream_duration.ToSeconds()
            for config in routes.values() for r in config.virtual_hosts[0].routes
            if r.route.HasField("max_stream_duration")}
    assert ages == (set() if expected is None else {expected})
