"""Traffic weights per slot, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from triton_slots.routing import SLOT_NAMES
from turnout.errors import ConfigError


@dataclass(frozen=True)
class Weights:
    """Percent of unpinned traffic per slot; the values sum to 100."""

    blue: int = 100
    green: int = 0

    def __post_init__(self) -> None:
        for slot in SLOT_NAMES:
            _check(slot, getattr(self, slot))
        if self.blue + self.green != 100:
            raise ConfigError(f"weights must sum to 100, got {self.blue} + {self.green}")

    @classmethod
    def with_green(cls, percent: int) -> Weights:
        _check("green", percent)
        return cls(blue=100 - percent, green=percent)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Weights:
        """From ``{"green": N}``, ``{"blue": N}`` (the other slot gets the rest) or both
        (summing to 100). Anything else is refused with what and where."""
        unknown = set(data) - set(SLOT_NAMES)
        if unknown:
            raise ConfigError(f"unknown slot(s) in weights: {sorted(unknown)}; "
                              f"slots are {', '.join(SLOT_NAMES)}")
        if not data:
            raise ConfigError("no weights given: set green (or blue) to a percent 0..100")
        if set(data) == {"green"}:
            return cls.with_green(_check("green", data["green"]))
        if set(data) == {"blue"}:
            return cls.with_green(100 - _check("blue", data["blue"]))
        return cls(blue=_check("blue", data["blue"]), green=_check("green", data["green"]))

    def as_dict(self) -> dict[str, int]:
        return {"blue": self.blue, "green": self.green}


def _check(slot: str, value: object) -> int:
    """``value`` if it is an integer percent (not a bool, not a string)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ConfigError(f"weight of {slot} must be an integer 0..100, got {value!r}")
    return value
