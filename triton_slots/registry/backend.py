"""The registry interface, its records, and its errors.

    RegistryError
     ├── ArtifactExistsError      name:version already pushed with other content
     ├── ArtifactNotFoundError    no such name:version
     ├── CorruptArtifactError     stored files no longer match the recorded digest
     └── StageTransitionError     e.g. retired -> active
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from triton_slots.artifact import ArtifactInfo, inspect
from triton_slots.routing import SLOT_NAMES


class Stage(StrEnum):
    """Where an artifact stands. Stored and compared as its string value."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    STANDBY = "standby"
    FAILED = "failed"  # validation or deploy failed
    ROLLED_BACK = "rolled_back"  # took traffic, then was taken back (the reason says why)
    RETIRED = "retired"


STAGES = tuple(s.value for s in Stage)

_S = Stage
#: Allowed stage changes (a deploy may always reset to candidate, except from active).
TRANSITIONS: dict[str, frozenset[str]] = {
    _S.CANDIDATE: frozenset({_S.CANDIDATE, _S.ACTIVE, _S.FAILED, _S.RETIRED, _S.STANDBY,
                             _S.ROLLED_BACK}),
    _S.ACTIVE: frozenset({_S.STANDBY, _S.FAILED, _S.ACTIVE, _S.ROLLED_BACK}),
    _S.STANDBY: frozenset({_S.ACTIVE, _S.RETIRED, _S.CANDIDATE, _S.STANDBY, _S.FAILED}),
    _S.FAILED: frozenset({_S.CANDIDATE, _S.RETIRED, _S.FAILED}),
    _S.ROLLED_BACK: frozenset({_S.CANDIDATE, _S.RETIRED, _S.ROLLED_BACK}),
    _S.RETIRED: frozenset({_S.CANDIDATE, _S.RETIRED}),
}


class RegistryError(Exception):
    """Base class of registry errors."""


class ArtifactExistsError(RegistryError):
    pass


class ArtifactNotFoundError(RegistryError):
    pass


class CorruptArtifactError(RegistryError):
    pass


class StageTransitionError(RegistryError):
    pass


def parse_ref(ref: str) -> tuple[str, str]:
    """``name:version`` -> (name, version)."""
    name, sep, version = ref.partition(":")
    if not sep or not name or not version:
        raise RegistryError(f"expected NAME:VERSION, got {ref!r}")
    return name, version


@dataclass(frozen=True)
class ArtifactRecord:
    """One registry entry. ``path`` is owned by the registry: read it, never write it."""

    name: str
    version: str
    digest: str
    created: float
    source: str
    model_name: str
    path: Path
    labels: dict[str, str] = field(default_factory=dict)
    slot: str | None = None
    stage: str = "candidate"
    stage_reason: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "digest": self.digest,
            "created": self.created, "source": self.source, "model_name": self.model_name,
            "path": str(self.path), "labels": self.labels, "slot": self.slot,
            "stage": self.stage, "stage_reason": self.stage_reason,
        }


class RegistryBackend(Protocol):
    """Where artifacts live. Implementations must make a push visible only once complete,
    and be safe with concurrent writers."""

    def push(self, directory: Path, *, name: str, version: str, source: str = "",
             labels: dict[str, str] | None = None) -> ArtifactRecord: ...

    def get(self, name: str, version: str) -> ArtifactRecord: ...

    def list(self, name: str | None = None) -> list[ArtifactRecord]: ...

    def verify(self, name: str, version: str) -> ArtifactRecord: ...

    def set_stage(self, name: str, version: str, stage: str, *, reason: str = "",
                  slot: str | None = None, clear_slot: bool = False) -> ArtifactRecord: ...

    def save_report(self, name: str, version: str, kind: str, body: dict[str, Any]) -> None: ...

    def report(self, name: str, version: str, kind: str) -> dict[str, Any] | None: ...


_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_component(kind: str, value: str) -> None:
    if not value or not set(value) <= _SAFE or value in {".", ".."}:
        raise RegistryError(f"{kind} {value!r} must be letters, digits, '.', '_' or '-'")


def check_push(directory: Path, name: str, version: str) -> ArtifactInfo:
    """What every backend checks before it stores a push: safe names, a valid model
    directory, and a ``name`` Triton will serve it under."""
    check_component("name", name)
    check_component("version", version)
    info = inspect(directory)
    if info.model_name != name:
        raise RegistryError(
            f"{directory / 'config.pbtxt'}: model name {info.model_name!r} does not match "
            f"--name {name!r} (Triton serves a model under its config name)")
    return info


def check_stage_args(stage: str, slot: str | None) -> None:
    """Refuse an unknown stage or slot (before anything is read)."""
    if stage not in STAGES:
        raise RegistryError(f"stage must be one of {STAGES}, not {stage!r}")
    if slot is not None and slot not in SLOT_NAMES:
        raise RegistryError(f"slot must be one of {SLOT_NAMES}, not {slot!r}")


def check_transition(ref: str, current: str, stage: str) -> None:
    """Refuse a stage change :data:`TRANSITIONS` does not allow."""
    if stage not in TRANSITIONS[current]:
        raise StageTransitionError(f"{ref} cannot go from {current} to {stage}")
