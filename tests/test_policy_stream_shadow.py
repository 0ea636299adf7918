"""Policy fields for streams and shadow traffic, and how the control plane applies them:
the bound on a long-lived stream's age (a policy's ``streamMaxAge`` while its rollout runs,
else the stack's ``stream_max_age_s``; 0: no bound), shadow steps (their weight, their
gates, every mistake named with its line) and the shadow copies the control plane refuses
to run."""

from __future__ import annotations

import asyncio
import dataclasses
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


SHADOW_POLICY = POLICY + """  strategy:
    steps:
      - {shadow: 10, bake: 30s}
      - {weight: 50}
      - {shadow: 100, bake: 10s}
      - {weight: 100}
  gates:
    metrics:
      - {name: disagreement, builtin: disagreement_rate, max: 0.01, source: shadow,
         sequential: {alpha: 0.01, beta: 0.05}}
      - {name: errors, builtin: error_rate, max: 0.01, source: envoy}
"""


def test_shadow_steps_keep_the_weight_before_them():
    policy = load_text(SHADOW_POLICY)
    assert [(s.weight, s.shadow, s.bake_s) for s in policy.steps] == [
        (0, 10.0, 30.0), (50, 0.0, 60.0), (50, 100.0, 10.0), (100, 0.0, 60.0)]
    assert [m.source for m in policy.gates.metrics] == ["shadow", "envoy"]


@pytest.mark.parametrize(("edit", "problem"), [
    (("{shadow: 10, bake: 30s}", "{shadow: 10, weight: 5}"),
     "p.yaml:8: spec.strategy.steps[0]: a step needs either weight (live traffic) or shadow "
     "(copies of live requests), not both"),
    (("{shadow: 10, bake: 30s}", "{bake: 30s}"),
     "p.yaml:8: spec.strategy.steps[0]: a step needs either weight (live traffic) or shadow "
     "(copies of live requests)"),
    (("{shadow: 10, bake: 30s}", "{shadow: 0}"),
     "p.yaml:8: spec.strategy.steps[0].shadow: 0 is less than or equal to the minimum of 0"),
    (("{shadow: 10, bake: 30s}", "{shadow: 101}"),
     "p.yaml:8: spec.strategy.steps[0].shadow: 101 is greater than the maximum of 100"),
    (("builtin: disagreement_rate, max: 0.01, source: shadow,",
      "builtin: disagreement_rate, max: 0.01, source: envoy,"),
     "p.yaml:14: spec.gates.metrics[0].builtin: disagreement_rate comes from shadow steps "
     "only: add source: shadow"),
    (("{name: errors, builtin: error_rate, max: 0.01, source: envoy}",
      "{name: errors, builtin: error_rate, max: 0.01, source: shadow}"),
     "p.yaml:16: spec.gates.metrics[1].source: source shadow answers only the builtins "
     "disagreement_rate, shadow_latency_ratio"),
])
def test_shadow_policy_mistakes_name_their_line(edit, problem):
    with pytest.raises(PolicyError) as info:
        load_text(SHADOW_POLICY.replace(*edit), "p.yaml")
    assert problem in [str(p) for p in info.value.problems]


def test_a_shadow_step_needs_a_shadow_gate():
    text = POLICY + "  strategy:\n    steps:\n      - {shadow: 5}\n      - {weight: 100}\n"
    with pytest.raises(PolicyError) as info:
        load_text(text, "p.yaml")
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:8: spec.strategy.steps[0].shadow: a shadow step is judged by shadow gates "
        "only: add a metric with source: shadow (builtin disagreement_rate or "
        "shadow_latency_ratio)"]


def test_the_control_plane_refuses_a_shadow_it_cannot_run(tmp_path):
    from turnout.errors import ConfigError
    from turnout.topology import Shadow

    plane = _plane(tmp_path, 120)
    with pytest.raises(ConfigError, match="needs shadow_admins"):
        plane._check_shadow(Shadow("green", 10, "k" * 20))
    plane.config = dataclasses.replace(plane.config, shadow_admins=("http://127.0.0.1:1",))
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match=r"^a shadow share is a percent in \(0, 100\], "
                                             rf"not {bad}$"):
            Shadow("green", bad, "k" * 20)
    Shadow("green", 0.0001, "k" * 20)
    plane._check_shadow(Shadow("green", 100, "k" * 20))
    plane._check_shadow(None)
    plane.config = dataclasses.replace(plane.config, shadow_tap=False)
    with pytest.raises(ConfigError, match="needs shadow_tap"):
        plane._check_shadow(Shadow("green", 10, "k" * 20))
    with pytest.raises(ConfigError, match="shadow_admins must be a list of proxy admin URLs"):
        dataclasses.replace(plane.config, shadow_admins=("127.0.0.1:1",))


def test_pushes_that_overtake_each_other_end_with_the_last_ones_shadow(tmp_path, monkeypatch):
    """A shadow push whose observer is still starting when a rollback's push (no shadow)
    comes: the routes and the observer both end as the rollback left them."""
    from turnout import controlplane
    from turnout.topology import Shadow
    from turnout.weights import Weights

    started: list[str] = []

    class SlowObserver:
        def __init__(self, admins):  # type: ignore[no-untyped-def]
            self.admins = admins
            self.stats = "figures"

        async def start(self) -> None:
            started.append("start")
            await asyncio.sleep(0.2)

        async def wait_connected(self) -> bool:
            return True

        async def stop(self) -> None:
            started.append("stop")

    monkeypatch.setattr(controlplane, "ShadowObserver", SlowObserver)
    admin, _ = mint("a", Role.ADMIN)
    config = ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                                min_proxies=0, shadow_admins=("http://127.0.0.1:1",))

    async def scenario() -> tuple[object, object, object, bool]:
        plane = ControlPlane(config)
        shadow = Shadow("green", 10, "k" * 20)
        first = asyncio.ensure_future(plane.apply_weights(Weights.with_green(0), shadow=shadow,
                                                          timeout=1))
        await asyncio.sleep(0.05)  # its observer is starting
        await plane.apply_weights(Weights.with_green(0), timeout=1)  # the rollback
        await first
        routes = plane.cache.snapshot(config.group).resources(
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration")
        copying = any("shadow" in r.name for c in routes.values()
                      for r in c.virtual_hosts[0].routes)
        return plane.shadow, plane._observer, plane.shadow_figures(), copying

    shadow, observer, figures, copying = asyncio.run(scenario())
    assert (shadow, observer, figures, copying) == (None, None, None, False)
    assert started == ["start", "stop"]
