"""`turnout deploy` never overwrites a slot a rollout is using, nor the warm standby."""

from __future__ import annotations

import pytest

from turnout.controller.guard import SlotInUse, deploy_target, refuse_overwrite

NOW = 1_000.0


def rollout(phase: str, **extra) -> dict:
    return {"name": "r1", "phase": phase, "model": "m:v2", "candidate_slot": "green",
            "stable_slot": "blue", "keep_warm_until": None, **extra}


def test_the_default_verb_and_the_whole_refusal():
    with pytest.raises(SlotInUse) as info:
        refuse_overwrite(rollout("baking"), "green", now=NOW)
    assert str(info.value) == ("rollout r1 is baking with m:v2 on slot green; deploy when it "
                               "has finished (or abort it)")
    with pytest.raises(SlotInUse) as info:
        refuse_overwrite(rollout("promoted", keep_warm_until=NOW + 5), "blue", now=NOW)
    assert str(info.value).endswith("; deploy there gives that rollback up: wait, or pass "
                                    "--force")


def test_a_deploy_by_hand_goes_to_the_one_idle_slot_only():
    assert deploy_target({"blue": 100, "green": 0}, None, None, now=NOW) == ("green", None)
    assert deploy_target({"blue": 0, "green": 100}, None, None, now=NOW) == ("blue", None)
    assert deploy_target({"blue": 100}, None, None, now=NOW) == ("green", None)
    assert deploy_target({"blue": 100, "green": 0}, None, "green", now=NOW) == ("green", None)
    with pytest.raises(SlotInUse) as info:
        deploy_target({"blue": 50, "green": 50}, None, None, now=NOW)
    assert str(info.value) == ("no single idle slot (weights {'blue': 50, 'green': 50}); "
                               "finish or roll back first")
    with pytest.raises(SlotInUse) as info:
        deploy_target({"blue": 100, "green": 0}, None, "blue", now=NOW)
    assert str(info.value) == "slot blue carries 100% of traffic; deploy only to the idle slot"
    # The guard of every way onto a slot: the warm standby needs force, which it reports.
    promoted = rollout("promoted", keep_warm_until=NOW + 60, stable_slot="green")
    with pytest.raises(SlotInUse, match="standby kept warm"):
        deploy_target({"blue": 100, "green": 0}, promoted, None, now=NOW)
    assert deploy_target({"blue": 100, "green": 0}, promoted, None, now=NOW, force=True) == (
        "green", "slot green is the standby kept warm for an instant rollback of r1 for 60 s "
                 "more")
    with pytest.raises(SlotInUse, match="rollout r1 is baking"):
        deploy_target({"blue": 100, "green": 0}, rollout("baking"), None, now=NOW,
                      force=True)


@pytest.mark.parametrize("phase", ["pending", "deploying", "validating", "shifting", "baking",
                                   "awaiting_approval", "paused", "rolling_back"])
def test_refused_while_a_rollout_uses_the_slots(phase):
    with pytest.raises(SlotInUse, match=f"rollout r1 is {phase} with m:v2 on slot green"):
        refuse_overwrite(rollout(phase), "green", now=NOW)
    with pytest.raises(SlotInUse, match="abort it"):
        refuse_overwrite(rollout(phase), "green", now=NOW, force=True)


def test_the_warm_standby_is_refused_until_its_window_ends_or_force():
    promoted = rollout("promoted", keep_warm_until=NOW + 120)
    with pytest.raises(SlotInUse, match=r"standby kept warm .* for 120 s more"):
        refuse_overwrite(promoted, "blue", now=NOW)
    refuse_overwrite(promoted, "blue", now=NOW, force=True)
    refuse_overwrite(promoted, "blue", now=NOW + 120)  # the window has ended
    refuse_overwrite(promoted, "green", now=NOW)  # not the standby


@pytest.mark.parametrize("phase", ["rolled_back", "aborted", "failed"])
def test_finished_rollouts_hold_nothing(phase):
    refuse_overwrite(rollout(phase, keep_warm_until=NOW + 120), "blue", now=NOW)
    refuse_overwrite(None, "blue", now=NOW)


def test_force_over_the_standby_returns_what_was_given_up_for_the_record():
    promoted = rollout("promoted", keep_warm_until=NOW + 120)
    assert refuse_overwrite(promoted, "blue", now=NOW, force=True) == (
        "slot blue is the standby kept warm for an instant rollback of r1 for 120 s more")
    assert refuse_overwrite(promoted, "blue", now=NOW + 120, force=True) is None
    assert refuse_overwrite(promoted, "green", now=NOW, force=True) is None
    assert refuse_overwrite(None, "blue", now=NOW, force=True) is None


@pytest.mark.parametrize("verb", ["applying", "validating"])
def test_each_way_onto_a_slot_is_named_in_the_refusal(verb):
    with pytest.raises(SlotInUse, match=f"; {verb} there gives that rollback up: wait, or "
                                        "pass --force$"):
        refuse_overwrite(rollout("promoted", keep_warm_until=NOW + 1), "blue", now=NOW,
                         verb=verb)
    with pytest.raises(SlotInUse, match=f"; {verb} when it has finished"):
        refuse_overwrite(rollout("baking"), "green", now=NOW, verb=verb)
