"""Traffic weights per slot, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from triton_slots.slot import SLOT_NAMES
from turnout.errors import ConfigError


@dataclass(frozen=True)
class Weights:
    """Percent of unpinned traffic per slot; the values sum to 100."""

    blue: int = 100
    green: int = 0

    def __post_init__(self) -> None:
        for slot in SLOT_NAMES:
            value = getattr(self, slot)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ConfigError(f"weight of {slot} must be an integer 0..100, got {value!r}")
        if self.blue + self.green != 100:
            raise ConfigError(f"weights must sum to 100, got {self.blue} + {self.green}")

    @classmethod
    def with_green(cls, percent: int) -> Weights:
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ConfigError(f"green percent must be an integer 0..100, got {percent!r}")
        return cls(blue=100 - percent, green=percent)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Weights:
        unknown = set(data) - set(SLOT_NAMES)
        if unknown:
            raise ConfigError(f"unknown slot(s) in weights: {sorted(unknown)}")
        if set(data) == {"green"}:
            return cls.with_green(data["green"])  # type: ignore[arg-type]
        if set(data) == {"blue"}:
            return cls.with_green(100 - data["blue"])  # type: ignore[operator]
        return cls(**data)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, int]:
        return {"blue": self.blue, "green": self.green}
