"""Deploy and validate against the local stack: glue between the registry, the slots and
the control plane's view of which slot is idle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gates.validation import ValidationReport, ValidationSettings, validate_artifact
from triton_slots.deploy import DeployResult, deploy
from triton_slots.registry import RegistryBackend, open_registry
from triton_slots.registry.local import REGISTRY_DB
from triton_slots.routing import SLOT_NAMES
from turnout.config import ControlPlaneConfig
from turnout.controller.guard import deploy_target, refuse_overwrite
from turnout.errors import ConfigError, StackError
from turnout.stack import StackInfo, missing_stack, registry_root, slot_repository


def other(slot: str) -> str:
    return SLOT_NAMES[1] if slot == SLOT_NAMES[0] else SLOT_NAMES[0]


def registry_for(directory: Path, *, create: bool = False) -> RegistryBackend:
    """The model registry of the stack in ``directory``: the PostgreSQL database its
    control planes share when its configuration names one, else the directory's. Refused
    (nothing created) when there is none, unless ``create``: a mistyped ``--dir`` must not
    become a registry no stack uses."""
    directory = directory.resolve()
    root = registry_root(directory)
    try:
        store = ControlPlaneConfig.load(directory / "controlplane.json").store
    except ConfigError:
        store = ""
    if not store and not create and not (root / REGISTRY_DB).is_file():
        raise missing_stack(directory, "model registry", f"registry/{REGISTRY_DB}")
    return open_registry(store, root)


def deploy_to_idle(directory: Path, name: str, version: str, *, slot: str | None = None,
                   timeout: float = 120.0, progress: Callable[[str], None] = print,
                   force: bool = False) -> DeployResult:
    info = StackInfo.load(directory.resolve())
    status = info.client().status()
    target, given_up = deploy_target(status["weights"], status.get("rollout"), slot,
                                     now=time.time(), force=force)
    if given_up:
        progress(f"--force: {given_up}; that rollback is given up")
    return deploy(
        registry_for(directory), name, version, slot=target,
        endpoints=info.endpoints(target),
        repository=slot_repository(Path(info.directory), target),
        timeout=timeout, progress=progress,
    )


def validate(directory: Path, name: str, version: str, *,
             settings: ValidationSettings | None = None,
             progress: Callable[[str], None] = print, force: bool = False) -> ValidationReport:
    """Validate the slot holding ``name:version``: refused (by the same guard as deploy and
    apply) while a rollout uses the slots, or on the warm standby unless ``force``."""
    info = StackInfo.load(directory.resolve())
    registry = registry_for(directory)
    record = registry.verify(name, version)
    if record.slot is None:
        raise StackError(f"{record.ref} is not deployed to a slot; run `turnout deploy` first")
    status = info.client().status()
    given_up = refuse_overwrite(status.get("rollout"), record.slot, now=time.time(),
                                force=force, verb="validating")
    if given_up:
        progress(f"--force: {given_up}; a failed validation marks {record.ref} failed")
    report = validate_artifact(registry, record, ingress=info.ingress,
                               preview_key=info.preview_key,
                               candidate_slot=record.slot, baseline_slot=other(record.slot),
                               settings=settings, progress=progress)
    if not report.passed:
        registry.set_stage(name, version, "failed",
                           reason=f"validation failed: {report.summary}")
    return report
