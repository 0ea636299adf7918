"""Rollout state (a plain dataclass, stored as JSON), its phases, events and actions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class RolloutPhase(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    VALIDATING = "validating"
    SHIFTING = "shifting"  # weights of step i pushed, waiting for every Envoy's ACK
    BAKING = "baking"  # at step i's weight, gates measured every interval
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    FAILED = "failed"


#: Phases after which the rollout makes no more progress (a promoted rollout can still be
#: rolled back within its keep-warm window).
FINISHED = frozenset({RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED,
                      RolloutPhase.FAILED})


class TransitionError(Exception):
    """A command that makes no sense in the current phase (the API answers 409)."""


@dataclass
class RolloutState:
    id: str
    name: str
    model: str  # registry NAME:VERSION
    digest: str
    candidate_slot: str
    stable_slot: str
    stable_model: str | None  # what the stable slot serves (NAME:VERSION), if known
    policy: dict[str, Any]  # the validated document
    source: str
    created_at: float
    phase: RolloutPhase = RolloutPhase.PENDING
    step: int = -1
    target_weight: int = 0  # candidate percent decided (stored with the weights)
    applied_weight: int = 0  # candidate percent every Envoy has ACKed
    step_entered_at: float | None = None
    next_measure_at: float | None = None
    measuring: bool = False
    rounds: list[dict[str, Any]] = field(default_factory=list)  # this step's gate rounds
    # The last step's rounds, kept as the evidence while the next step waits (approval).
    previous_rounds: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    approved_step: int = -1
    full_promotion: bool = False
    paused_from: RolloutPhase | None = None
    ending: RolloutPhase | None = None  # where ROLLING_BACK ends: rolled_back or aborted
    reason: str = ""
    deadline_at: float = 0.0
    promoted_at: float | None = None
    keep_warm_until: float | None = None
    finished_at: float | None = None
    first_failure_at: float | None = None
    rollback_decided_at: float | None = None
    rollback_acked_at: float | None = None
    steps_log: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        data = dict(data)
        data["phase"] = RolloutPhase(data["phase"])
        for key in ("paused_from", "ending"):
            if data.get(key) is not None:
                data[key] = RolloutPhase(data[key])
        return cls(**data)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def last_shadow(self) -> dict[str, Any] | None:
        """The shadow comparison the latest gate round of a shadow step kept, if any."""
        for rounds in (self.rounds, self.previous_rounds):
            for gate_round in reversed(rounds):
                shadow = (gate_round.get("evidence") or {}).get("shadow")
                if shadow:
                    return shadow
        return None


# ---- events (what happened) ---------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class DeployFinished:
    ok: bool
    message: str
    digest: str = ""


@dataclass(frozen=True)
class ValidationFinished:
    passed: bool
    summary: str
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightsPushed:
    weight: int
    converged: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class GatesMeasured:
    round: dict[str, Any]  # a GateRound as a dict


class CommandName(StrEnum):
    """What an operator can ask of a rollout."""

    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Command:
    name: CommandName
    actor: str
    full: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "name", CommandName(self.name))
        except ValueError:
            raise TransitionError(f"unknown command {self.name!r}") from None


@dataclass(frozen=True)
class SlotHealth:
    """How many of a slot's servers are ready (the control plane's probes)."""

    slot: str
    healthy: int
    total: int


Event = Started | Tick | DeployFinished | ValidationFinished | WeightsPushed | GatesMeasured \
    | Command | SlotHealth


# ---- actions (what the driver must do) ----------------------------------------------------
@dataclass(frozen=True)
class Deploy:
    pass


@dataclass(frozen=True)
class Validate:
    pass


@dataclass(frozen=True)
class PushWeights:
    weight: int  # candidate percent
    shadow: float = 0.0  # percent of live requests also copied to the candidate


@dataclass(frozen=True)
class MeasureGates:
    window_s: float


#: Why traffic is taken back from a candidate: a bounded label (turnout_rollbacks_total)
#: and the words the registry keeps with its ``rolled_back`` stage.
ROLLBACK_CAUSES = {"gate": "by a gate", "metric_errors": "for missing metrics",
                   "unhealthy": "for its health", "deadline": "at its progress deadline",
                   "abort": "by an operator (abort)", "manual": "by an operator"}


def rollback_cause(state: RolloutState) -> str:
    """The label of why ``state`` (rolling back, its reason not yet replaced) takes traffic
    back: one of :data:`ROLLBACK_CAUSES` (the first cause counts: an abort while a gate's
    rollback runs is the gate's)."""
    for prefix, cause in (("gate failed", "gate"), ("metrics unavailable", "metric_errors"),
                          ("candidate slot", "unhealthy"), ("progress deadline", "deadline")):
        if state.reason.startswith(prefix):
            return cause
    return "abort" if state.ending is RolloutPhase.ABORTED else "manual"


@dataclass(frozen=True)
class MarkPromoted:
    pass


@dataclass(frozen=True)
class MarkFailed:
    """The version failed validation: registry stage ``failed``."""

    reason: str


@dataclass(frozen=True)
class MarkRolledBack:
    """The version was taken back (by a gate, an operator, its health, its deadline):
    registry stage ``rolled_back``, the reason kept."""

    reason: str


@dataclass(frozen=True)
class Note:
    """An audit entry to record with the new state."""

    kind: str
    actor: str
    message: str
    evidence: Any = None


Action = (Deploy | Validate | PushWeights | MeasureGates | MarkPromoted | MarkFailed
          | MarkRolledBack | Note)
