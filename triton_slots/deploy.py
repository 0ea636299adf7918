"""Deploy a registry version into every Triton server of the idle slot and prove it.

Steps: verify the artifact's digest; stage it into the slot's model repository with the
digest written into its config (``parameters.turnout_digest``); swap it in; ask every
server to load it (explicit model control); wait until it is READY everywhere; read the
config back from each server and compare the digest. Any failure marks the artifact
``failed`` with the reason and raises :class:`DeployError`; only the target slot's
repository and servers are touched.

A slot serves a *set* of models. Every other model of the active set (the ``active``
version of each other registry name) is brought onto the slot first, the same way, unless
it is already there with the same digest: a switch never drops a model.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from triton_slots.admin import TritonAdmin, TritonAdminError
from triton_slots.artifact import CONFIG_FILE, parse_config
from triton_slots.registry import ArtifactRecord, RegistryBackend, RegistryError, Stage
from triton_slots.slot import Endpoint

DIGEST_PARAMETER = "turnout_digest"
REF_PARAMETER = "turnout_ref"


class DeployError(RuntimeError):
    """The version could not be deployed; the artifact has been marked ``failed``."""


@dataclass(frozen=True)
class DeployResult:
    ref: str
    slot: str
    digest: str
    seconds: float
    endpoints: tuple[str, ...]
    companions: tuple[str, ...] = ()  # other models of the active set brought onto the slot


def staged_digest(repository: Path, model_name: str) -> str:
    """The digest of the version staged in ``repository`` for ``model_name`` ("" if none)."""
    path = repository / model_name / CONFIG_FILE
    if not path.exists():
        return ""
    try:
        config = parse_config(path)
    except ValueError:
        return ""
    value = config.parameters.get(DIGEST_PARAMETER)
    return value.string_value if value is not None else ""


def companions_of(registry: RegistryBackend, record: ArtifactRecord) -> list[ArtifactRecord]:
    """The active version of every other model: what the slot must also serve."""
    return [r for r in registry.list() if r.stage == Stage.ACTIVE
            and r.model_name != record.model_name]


def stage_artifact(record: ArtifactRecord, repository: Path) -> None:
    """Copy the artifact into ``repository/<model>`` (atomic swap), digest in its config."""
    repository.mkdir(parents=True, exist_ok=True)
    staging = repository / f".staging-{uuid.uuid4().hex}"
    shutil.copytree(record.path, staging)
    config = parse_config(staging / CONFIG_FILE)
    config.parameters[DIGEST_PARAMETER].string_value = record.digest
    config.parameters[REF_PARAMETER].string_value = record.ref
    (staging / CONFIG_FILE).write_text(text_format.MessageToString(config))
    target = repository / record.model_name
    retired = repository / f".old-{uuid.uuid4().hex}"
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _load_and_verify(endpoint: Endpoint, record: ArtifactRecord, deadline: float) -> None:
    admin = TritonAdmin(endpoint, timeout=max(1.0, deadline - time.monotonic()))
    if admin.model_ready(record.model_name) and _served_digest(admin, record) == record.digest:
        return  # already serving exactly this version
    admin.load(record.model_name)
    while not admin.model_ready(record.model_name):
        if time.monotonic() > deadline:
            raise TritonAdminError(endpoint, f"{record.model_name!r} not READY before timeout")
        time.sleep(0.1)
    served = _served_digest(admin, record)
    if served != record.digest:
        raise TritonAdminError(
            endpoint, f"serves digest {served[:12] or '(none)'}, expected {record.digest[:12]}"
        )


def _served_digest(admin: TritonAdmin, record: ArtifactRecord) -> str:
    parameters = admin.model_config(record.model_name).get("parameters", {})
    return str(parameters.get(DIGEST_PARAMETER, {}).get("string_value", ""))


def deploy(
    registry: RegistryBackend,
    name: str,
    version: str,
    *,
    slot: str,
    endpoints: list[Endpoint],
    repository: Path,
    timeout: float = 120.0,
    progress: Callable[[str], None] = lambda _: None,
) -> DeployResult:
    started = time.monotonic()
    ref = f"{name}:{version}"
    try:
        record = registry.verify(name, version)
    except RegistryError as exc:
        _mark_failed(registry, name, version, str(exc))
        raise DeployError(str(exc)) from exc
    if not endpoints:
        raise DeployError(f"slot {slot} has no Triton servers")
    deadline = started + timeout
    companions = companions_of(registry, record)
    for companion in companions:
        errors = _put(companion, endpoints, repository, deadline, progress)
        if errors:
            reason = (f"deploy to {slot} failed: could not bring {companion.ref} (also served "
                      f"by the active slot) onto it: " + "; ".join(errors))
            _mark_failed(registry, name, version, reason)
            raise DeployError(reason)
    errors = _put(record, endpoints, repository, deadline, progress, force=True)
    if errors:
        reason = f"deploy to {slot} failed on {len(errors)}/{len(endpoints)} servers: " + \
            "; ".join(errors)
        _mark_failed(registry, name, version, reason)
        raise DeployError(reason)
    _retire_replaced(registry, record, slot)
    registry.set_stage(name, version, Stage.CANDIDATE, reason=f"deployed to {slot}", slot=slot)
    return DeployResult(ref, slot, record.digest, time.monotonic() - started,
                        tuple(e.grpc_address for e in endpoints),
                        tuple(c.ref for c in companions))


def _put(record: ArtifactRecord, endpoints: list[Endpoint], repository: Path, deadline: float,
         progress: Callable[[str], None], *, force: bool = False) -> list[str]:
    """Stage ``record`` (unless already staged with its digest) and load it on every
    server; the errors, one per failed server."""
    if force or staged_digest(repository, record.model_name) != record.digest:
        progress(f"staging {record.ref} ({record.digest[:12]}) into {repository}")
        stage_artifact(record, repository)
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        futures = {pool.submit(_load_and_verify, e, record, deadline): e for e in endpoints}
        for future, endpoint in futures.items():
            try:
                future.result()
                progress(f"  {endpoint.grpc_address}: {record.ref} READY, digest verified")
            except TritonAdminError as exc:
                errors.append(str(exc))
                progress(f"  {endpoint.grpc_address}: FAILED {exc}")
    return errors


def _retire_replaced(registry: RegistryBackend, record: ArtifactRecord, slot: str) -> None:
    """A slot serves one version of a model: the one it served before (a standby kept warm,
    an earlier candidate) is no longer loaded anywhere, and the registry says so."""
    for old in registry.list(record.name):
        if old.slot == slot and old.version != record.version \
                and old.stage in (Stage.STANDBY, Stage.CANDIDATE):
            registry.set_stage(old.name, old.version, Stage.RETIRED, clear_slot=True,
                               reason=f"replaced on {slot} by {record.ref}")


def _mark_failed(registry: RegistryBackend, name: str, version: str, reason: str) -> None:
    # An unknown artifact, or one whose stage cannot fail, has nothing to mark.
    with contextlib.suppress(RegistryError):
        registry.set_stage(name, version, Stage.FAILED, reason=reason, clear_slot=True)
