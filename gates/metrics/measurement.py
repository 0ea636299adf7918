"""One phase enum for every level, and the record of one metric evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    ERROR = "Error"  # the query could not be run (provider down, bad PromQL)
    INCONCLUSIVE = "Inconclusive"  # no data, NaN, too few requests, no baseline


@dataclass(frozen=True)
class Measurement:
    """A metric evaluated once. Never Successful without a finite value that passed."""

    metric: str
    phase: Phase
    message: str
    value: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    requests: float | None = None
    threshold: str = ""
    dry_run: bool = False
    at: float = 0.0
    # Inconclusive because a sequential test wants more requests (keep baking), not because
    # data is missing: such rounds do not count toward inconclusiveLimit.
    gathering: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = str(self.phase)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**{**data, "phase": Phase(data["phase"])})
