"""Which rollout transitions are told, and what each notice says."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from turnout.controller.state import RolloutPhase, RolloutState


class NotificationKind(StrEnum):
    STARTED = "started"
    STEP_ENTERED = "step_entered"
    GATE_FAILED = "gate_failed"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"
    ABORTED = "aborted"
    FAILED = "failed"


_ON_ENTRY = {
    RolloutPhase.PAUSED: NotificationKind.PAUSED,
    RolloutPhase.ROLLED_BACK: NotificationKind.ROLLED_BACK,
    RolloutPhase.PROMOTED: NotificationKind.PROMOTED,
    RolloutPhase.ABORTED: NotificationKind.ABORTED,
    RolloutPhase.FAILED: NotificationKind.FAILED,
}


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    rollout: str
    name: str
    model: str
    phase: str
    step: int  # 1-based; 0 before the first
    steps: int
    weight: int  # the candidate's percent decided (0 once rolling back)
    traffic: int  # the candidate's percent every Envoy has ACKed (where traffic is now)
    candidate_slot: str
    message: str
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # A rollback decided in a shadow step: the comparison that decided it (disagreeing
    # outputs, worst differences, first disagreeing requests as digests; no payloads).
    shadow: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        if data["shadow"] is None:
            del data["shadow"]
        return data


def transition_notices(previous: tuple[str, RolloutPhase, int] | None,
                       state: RolloutState, steps: int) -> list[Notification]:
    """The notices for going from ``previous`` (rollout id, phase, step) to ``state``."""
    same = previous is not None and previous[0] == state.id
    kinds: list[NotificationKind] = []
    if not same:
        kinds.append(NotificationKind.STARTED)
    old_phase = previous[1] if same and previous else None
    old_step = previous[2] if same and previous else -1
    if state.step != old_step and state.step >= 0 and state.phase in (
            RolloutPhase.SHIFTING, RolloutPhase.BAKING):
        kinds.append(NotificationKind.STEP_ENTERED)
    if state.phase != old_phase:
        if state.phase is RolloutPhase.ROLLING_BACK:
            if state.reason.startswith("gate failed"):
                kinds.append(NotificationKind.GATE_FAILED)
            kinds.append(NotificationKind.ROLLING_BACK)
        elif state.phase in _ON_ENTRY:
            kinds.append(_ON_ENTRY[state.phase])
    shadow = state.last_shadow()
    return [Notification(kind, state.id, state.name, state.model, str(state.phase),
                         state.step + 1, steps, state.target_weight, state.applied_weight,
                         state.candidate_slot, state.reason,
                         shadow=shadow if kind in _WITH_SHADOW else None)
            for kind in kinds]


#: The notices that carry a shadow step's comparison, when the rollout has one.
_WITH_SHADOW = (NotificationKind.GATE_FAILED, NotificationKind.ROLLING_BACK,
                NotificationKind.ROLLED_BACK)
