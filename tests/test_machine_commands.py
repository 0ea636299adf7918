"""What the dashboard offers: the commands each phase accepts ("Commands by phase" in
docs/observability.md), written out here from that table, not read from the machine; and
the last step's gate rounds kept as the evidence while the next step waits for approval."""

from __future__ import annotations

import pytest

from gates.metrics.measurement import Phase
from tests.test_machine import P, gate, measure, new_state, run, to_baking
from turnout.controller.machine import available_commands
from turnout.controller.state import (
    Command,
    DeployFinished,
    Started,
    ValidationFinished,
    WeightsPushed,
)

NONE: list[str] = []


def _in(phase: str):
    """A state in ``phase`` reached the way a rollout reaches it."""
    if phase == "pending":
        return new_state()
    s, _ = run(new_state(), Started(), 0.0)
    if phase == "deploying":
        return s
    s, _ = run(s, DeployFinished(True, "ok"), 0.0)
    if phase == "validating":
        return s
    s, _ = run(s, ValidationFinished(True, "ok"), 0.0)
    if phase == "shifting":
        return s
    s, _ = run(s, WeightsPushed(10, True, 0.002), 0.0)
    if phase == "baking":
        return s
    if phase == "paused":
        return run(s, Command("pause", "pat"), 1.0)[0]
    if phase in ("rolling_back", "rolling_back_to_abort"):
        s, _ = run(s, Command("rollback", "pat"), 1.0)
        if phase == "rolling_back_to_abort":
            s, _ = run(s, Command("abort", "pat"), 1.0)
        return s
    if phase == "rolled_back":
        s, _ = run(s, Command("rollback", "pat"), 1.0)
        return run(s, WeightsPushed(0, True, 0.002), 1.0)[0]
    s = measure(s, 10.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL), 10.0)
    if phase == "awaiting_approval":
        return s
    assert phase == "promoted"
    return run(s, Command("promote", "pat", full=True), 11.0)[0]


@pytest.mark.parametrize("phase, commands", [
    ("pending", ["abort", "rollback"]),
    ("deploying", ["abort", "rollback"]),
    ("validating", ["abort", "rollback"]),
    ("shifting", ["pause", "abort", "rollback"]),
    ("baking", ["pause", "promote", "abort", "rollback"]),
    ("awaiting_approval", ["pause", "promote", "abort", "rollback"]),
    ("paused", ["resume", "abort", "rollback"]),
    ("rolling_back", ["abort"]),  # abort changes only the ending
    ("rolling_back_to_abort", NONE),
    ("rolled_back", NONE),
])
def test_each_phase_offers_what_it_accepts(phase, commands):
    state = _in(phase)
    assert str(state.phase) == phase.removesuffix("_to_abort")
    assert available_commands(state, 2.0) == commands
    for name in ("pause", "resume", "promote", "abort", "rollback"):  # and the machine agrees
        accepted = True
        try:
            run(state, Command(name, "pat"), 2.0)
        except Exception:
            accepted = False
        assert accepted == (name in commands), name


def test_a_promoted_rollout_offers_rollback_only_while_the_old_slot_is_warm():
    s = _in("promoted")
    s, _ = run(s, WeightsPushed(100, True, 0.002), 12.0)
    assert s.phase is P.PROMOTED and s.keep_warm_until == 72.0
    assert available_commands(s, 72.0) == ["rollback"]
    assert available_commands(s, 72.5) == NONE


def test_offering_changes_nothing():
    s = to_baking()
    before = s.as_dict()
    available_commands(s, 5.0)
    assert s.as_dict() == before


def test_the_last_steps_rounds_stay_while_the_next_step_waits_for_approval():
    s = to_baking()
    assert s.previous_rounds == []
    s = measure(s, 5.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL, at=5.0), 5.0)
    s = measure(s, 10.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL, at=10.0), 10.0)
    assert s.phase is P.AWAITING_APPROVAL and s.rounds == []
    assert [r["at"] for r in s.previous_rounds] == [5.0, 10.0]
    s, _ = run(s, Command("promote", "pat"), 11.0)  # approved: shifting to step 2
    assert [r["at"] for r in s.previous_rounds] == [5.0, 10.0]
    s, _ = run(s, WeightsPushed(50, True, 0.002), 12.0)
    s = measure(s, 17.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL, at=17.0), 17.0)
    assert [r["at"] for r in s.rounds] == [17.0]
    s = measure(s, 22.0)
    s, _ = run(s, gate(Phase.SUCCESSFUL, at=22.0), 22.0)
    assert s.step == 2 and [r["at"] for r in s.previous_rounds] == [17.0, 22.0]
