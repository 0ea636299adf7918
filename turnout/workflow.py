"""Deploy and validate against the local stack: glue between the registry, the slots and
the control plane's view of which slot is idle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gates.validation import ValidationReport, ValidationSettings, validate_artifact
from triton_slots.deploy import DeployResult, deploy
from triton_slots.registry import LocalRegistry
from triton_slots.slot import SLOT_NAMES
from turnout.client import ApiClient
from turnout.errors import StackError
from turnout.stack import StackInfo, registry_root, slot_repository


def idle_slot(weights: dict[str, int]) -> str:
    """The slot with no weighted traffic; refuses while traffic is split between both."""
    idle = [slot for slot in SLOT_NAMES if weights.get(slot, 0) == 0]
    if len(idle) != 1:
        raise StackError(f"no single idle slot (weights {weights}); finish or roll back first")
    return idle[0]


#: Phases in which a rollout owns its candidate slot (deploying, validating, shifting...).
_FINISHED = {"promoted", "rolled_back", "aborted", "failed"}


def refuse_overwrite(rollout: dict[str, Any] | None, target: str, *, now: float,
                     force: bool = False) -> None:
    """Refuse to deploy onto ``target`` while a rollout deploys to, validates or shifts
    traffic with it, or while it is the standby kept warm for an instant rollback (unless
    ``force``: the operator gives that rollback up)."""
    if rollout is None:
        return
    phase = rollout["phase"]
    if phase not in _FINISHED:
        raise StackError(f"rollout {rollout['name']} is {phase} with {rollout['model']} on "
                         f"slot {rollout['candidate_slot']}; deploy when it has finished "
                         "(or abort it)")
    warm_until = rollout.get("keep_warm_until")
    if phase == "promoted" and warm_until and now < warm_until \
            and target == rollout["stable_slot"] and not force:
        raise StackError(
            f"slot {target} is the standby kept warm for an instant rollback of "
            f"{rollout['name']} for {warm_until - now:.0f} s more; deploying there gives "
            "that rollback up: wait, or pass --force")


def other(slot: str) -> str:
    return SLOT_NAMES[1] if slot == SLOT_NAMES[0] else SLOT_NAMES[0]


def registry_for(directory: Path) -> LocalRegistry:
    return LocalRegistry(registry_root(directory.resolve()))


def deploy_to_idle(directory: Path, name: str, version: str, *, slot: str | None = None,
                   timeout: float = 120.0, progress: Callable[[str], None] = print,
                   force: bool = False) -> DeployResult:
    info = StackInfo.load(directory.resolve())
    status = ApiClient(info.api_url, info.token).status()
    weights = status["weights"]
    target = slot or idle_slot(weights)
    if weights.get(target, 0) != 0:
        raise StackError(f"slot {target} carries {weights[target]}% of traffic; "
                         "deploy only to the idle slot")
    refuse_overwrite(status.get("rollout"), target, now=time.time(), force=force)
    return deploy(
        registry_for(directory), name, version, slot=target,
        endpoints=info.endpoints(target),
        repository=slot_repository(Path(info.directory), target),
        timeout=timeout, progress=progress,
    )


def validate(directory: Path, name: str, version: str, *,
             settings: ValidationSettings | None = None,
             progress: Callable[[str], None] = print) -> ValidationReport:
    info = StackInfo.load(directory.resolve())
    registry = registry_for(directory)
    record = registry.verify(name, version)
    if record.slot is None:
        raise StackError(f"{record.ref} is not deployed to a slot; run `turnout deploy` first")
    report = validate_artifact(registry, record, ingress=info.ingress,
                               preview_key=info.preview_key,
                               candidate_slot=record.slot, baseline_slot=other(record.slot),
                               settings=settings, progress=progress)
    if not report.passed:
        registry.set_stage(name, version, "failed",
                           reason=f"validation failed: {report.summary}")
    return report
