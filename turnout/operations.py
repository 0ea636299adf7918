"""Deploy and validate a registry version by hand, done by the control plane itself (the
API's ``/v1/models/NAME/VERSION/deploy`` and ``/validate``): a CLI anywhere, through a
context, reaches servers only the control plane can. Same guard as every way onto a slot;
each is an audit entry naming who asked, and the answer carries the progress lines.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gates.validation import validate_artifact
from triton_slots.deploy import deploy
from triton_slots.registry import Stage
from triton_slots.routing import SLOT_NAMES
from turnout.controller.guard import deploy_target, refuse_overwrite
from turnout.errors import StackError
from turnout.store import AuditEntry

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane


async def deploy_version(plane: ControlPlane, name: str, version: str, *, slot: str | None,
                         force: bool, timeout: float, actor: str) -> dict[str, Any]:
    """Deploy ``name:version`` to ``slot`` (default: the idle one), holding the slot so no
    server is admitted meanwhile."""
    target, given_up = deploy_target(plane.weights.as_dict(), plane.controller.describe(),
                                     slot, now=time.time(), force=force)
    lines: list[str] = []
    if given_up:
        lines.append(f"--force: {given_up}; that rollback is given up")
    target_slot = plane.slot(target)
    registry = plane.controller.registry

    def work() -> dict[str, Any]:
        with plane.deploying(target):
            result = deploy(registry, name, version, slot=target,
                            endpoints=list(plane.slot(target).endpoints),
                            repository=target_slot.repository, timeout=timeout,
                            progress=lines.append)
        return {"ref": result.ref, "slot": result.slot, "digest": result.digest,
                "servers": list(result.endpoints),
                "seconds": result.seconds}

    audit = [AuditEntry(kind="force", actor=actor, message=given_up)] if given_up else []
    try:
        done = await asyncio.to_thread(work)
    except Exception:
        plane.store.commit(audit=[*audit, AuditEntry(
            kind="deploy", actor=actor, message=f"deploy of {name}:{version} to {target} "
                                                "failed")])
        raise
    plane.store.commit(audit=[*audit, AuditEntry(
        kind="deploy", actor=actor, digests={done["ref"]: done["digest"]},
        message=f"{done['ref']} deployed to {target} on {len(done['servers'])} server(s)")])
    return {**done, "log": lines}


async def validate_version(plane: ControlPlane, name: str, version: str, *, force: bool,
                           actor: str) -> dict[str, Any]:
    """Validate the slot holding ``name:version`` (a failure marks it ``failed``)."""
    registry = plane.controller.registry
    record = await asyncio.to_thread(registry.verify, name, version)
    if record.slot is None:
        raise StackError(f"{record.ref} is not deployed to a slot; deploy it first")
    given_up = refuse_overwrite(plane.controller.describe(), record.slot, now=time.time(),
                                force=force, verb="validating")
    lines: list[str] = []
    if given_up:
        lines.append(f"--force: {given_up}; a failed validation marks {record.ref} failed")
    baseline = SLOT_NAMES[1] if record.slot == SLOT_NAMES[0] else SLOT_NAMES[0]
    report = await asyncio.to_thread(
        validate_artifact, registry, record, ingress=plane.ingress_address,
        preview_key=plane.preview_key, candidate_slot=record.slot, baseline_slot=baseline,
        progress=lines.append)
    if not report.passed:
        registry.set_stage(name, version, Stage.FAILED,
                           reason=f"validation failed: {report.summary}")
    plane.store.commit(audit=[
        *([AuditEntry(kind="force", actor=actor, message=given_up)] if given_up else []),
        AuditEntry(kind="validate", actor=actor, message=f"{record.ref} on {record.slot}: "
                   f"{'passed' if report.passed else 'failed'}: {report.summary}")])
    return {"report": report.as_dict(), "table": report.table(), "passed": report.passed,
            "log": lines}
