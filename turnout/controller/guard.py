"""One guard for every way onto a slot (``apply``, ``deploy``, ``validate``): never onto a
slot a rollout is using, and never onto the standby kept warm for an instant rollback unless
the operator gives that rollback up (``force``, recorded by the caller)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triton_slots.routing import SLOT_NAMES
from turnout.controller.state import FINISHED
from turnout.errors import TurnoutError


class SlotInUse(TurnoutError):
    """A slot may not be written now; the message says why and what would allow it."""


def refuse_overwrite(rollout: Mapping[str, Any] | None, target: str, *, now: float,
                     force: bool = False, verb: str = "deploy") -> str | None:
    """Raise :class:`SlotInUse` while a rollout deploys to, validates or shifts traffic with
    ``target`` (``force`` does not help: abort it), or while ``target`` is the standby kept
    warm for an instant rollback and not ``force``. With ``force`` over a warm standby,
    returns what was given up (for the audit log); else None."""
    if rollout is None:
        return None
    phase = str(rollout["phase"])
    if phase not in FINISHED:  # a StrEnum: the stored text compares equal
        raise SlotInUse(f"rollout {rollout['name']} is {phase} with {rollout['model']} on "
                        f"slot {rollout['candidate_slot']}; {verb} when it has finished "
                        "(or abort it)")
    warm_until = rollout.get("keep_warm_until")
    if phase == "promoted" and warm_until and now < warm_until \
            and target == rollout["stable_slot"]:
        given_up = (f"slot {target} is the standby kept warm for an instant rollback of "
                    f"{rollout['name']} for {warm_until - now:.0f} s more")
        if not force:
            raise SlotInUse(f"{given_up}; {verb} there gives that rollback up: wait, or pass "
                            "--force")
        return given_up
    return None


def deploy_target(weights: Mapping[str, int], rollout: Mapping[str, Any] | None,
                  slot: str | None, *, now: float, force: bool = False) -> tuple[str, str | None]:
    """Where a deploy by hand goes: ``slot``, or the one slot with no traffic; refused onto
    a slot that carries traffic, and by :func:`refuse_overwrite`. Returns the slot and what
    ``force`` gave up (None: nothing)."""
    if slot is None:
        idle = [name for name in SLOT_NAMES if weights.get(name, 0) == 0]
        if len(idle) != 1:
            raise SlotInUse(f"no single idle slot (weights {dict(weights)}); finish or roll "
                            "back first")
        slot = idle[0]
    if weights.get(slot, 0) != 0:
        raise SlotInUse(f"slot {slot} carries {weights[slot]}% of traffic; deploy only to the "
                        "idle slot")
    return slot, refuse_overwrite(rollout, slot, now=now, force=force)
