"""Deploy a registry version into every Triton server of the idle slot and prove it.

Steps: verify the artifact's digest; make it ready to load with the digest written into
its config (``parameters.turnout_digest``): staged into the slot's shared model repository,
or, for servers that share no disk with the control plane, a load request carrying the
config and files (``triton_slots.delivery``); ask every server to load it (explicit model
control); wait until it is READY everywhere; read the config back from each server and
compare the digest. Any failure marks the artifact
``failed`` with the reason and raises :class:`DeployError`; only the target slot's
repository and servers are touched.

A slot serves a *set* of models. Every other model of the active set (the ``active``
version of each other registry name) is brought onto the slot first, the same way, unless
it is already there with the same digest: a switch never drops a model.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from triton_slots.admin import TritonAdmin, TritonAdminError, check_server
from triton_slots.delivery import DIGEST_PARAMETER, Delivery, DeliveryError, choose
from triton_slots.registry import ArtifactRecord, RegistryBackend, RegistryError, Stage
from triton_slots.slot import Endpoint


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


def companions_of(registry: RegistryBackend, record: ArtifactRecord) -> list[ArtifactRecord]:
    """The active version of every other model: what the slot must also serve."""
    return [r for r in registry.list() if r.stage == Stage.ACTIVE
            and r.model_name != record.model_name]


def _load_and_verify(endpoint: Endpoint, record: ArtifactRecord, delivery: Delivery,
                     deadline: float, slot: str) -> None:
    admin = TritonAdmin(endpoint, timeout=max(1.0, deadline - time.monotonic()), slot=slot)
    if admin.model_ready(record.model_name) and _served_digest(admin, record) == record.digest:
        return  # already serving exactly this version
    delivery.load(admin, record)
    while not admin.model_ready(record.model_name, strict=True):  # gone: fail at once
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
    repository: Path | None,
    timeout: float = 120.0,
    progress: Callable[[str], None] = lambda _: None,
) -> DeployResult:
    """Deploy ``name:version`` (and the rest of the active set) onto ``endpoints``: through
    ``repository`` when the slot shares one with its servers, else over the repository
    API. Raises :class:`DeployError` naming every server that failed."""
    started = time.monotonic()
    delivery = choose(repository)
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
    try:
        for companion in companions:
            errors = _put(companion, endpoints, delivery, deadline, progress, slot=slot)
            if errors:
                reason = (f"deploy to {slot} failed: could not bring {companion.ref} (also "
                          f"served by the active slot) onto it: " + "; ".join(errors))
                _mark_failed(registry, name, version, reason)
                raise DeployError(reason)
        errors = _put(record, endpoints, delivery, deadline, progress, slot=slot,
                      fresh=True)
    except DeliveryError as exc:
        _mark_failed(registry, name, version, str(exc))
        raise DeployError(str(exc)) from exc
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


def _put(record: ArtifactRecord, endpoints: list[Endpoint], delivery: Delivery,
         deadline: float, progress: Callable[[str], None], *, slot: str,
         fresh: bool = False) -> list[str]:
    """Prepare ``record`` for ``delivery`` (``fresh``: even if it looks prepared) and load
    it on every server; the errors, one per failed server."""
    said = delivery.prepare(record, fresh=fresh)  # DeliveryError: before any server
    if said:
        progress(said)
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        futures = {pool.submit(_load_and_verify, e, record, delivery, deadline, slot): e
                   for e in endpoints}
        for future, endpoint in futures.items():
            try:
                future.result()
                progress(f"  {endpoint.grpc_address}: {record.ref} READY, digest verified")
            except TritonAdminError as exc:
                errors.append(str(exc))
                progress(f"  {endpoint.grpc_address}: FAILED {exc}")
    return errors


def slot_set(registry: RegistryBackend, slot: str) -> list[ArtifactRecord]:
    """What every server of ``slot`` serves: per model, the version the registry places on
    the slot (candidate, active or standby), else the active version."""
    records = registry.list()
    chosen: dict[str, ArtifactRecord] = {}
    for r in records:
        if r.slot == slot and r.stage in (Stage.CANDIDATE, Stage.ACTIVE, Stage.STANDBY):
            chosen[r.model_name] = r
    for r in records:
        if r.stage == Stage.ACTIVE:
            chosen.setdefault(r.model_name, r)
    return sorted(chosen.values(), key=lambda r: r.model_name)


def bring_up(registry: RegistryBackend, slot: str, endpoint: Endpoint, *,
             repository: Path | None, timeout: float = 120.0,
             peers: tuple[Endpoint, ...] = (),
             progress: Callable[[str], None] = lambda _: None) -> list[str]:
    """Check the server (explicit model control, the Triton version of ``peers``), load
    ``slot``'s model set onto it and verify every digest, changing no registry stage;
    returns the refs it serves. Raises :class:`DeployError` naming the server and what
    failed."""
    deadline = time.monotonic() + timeout
    try:
        check_server(endpoint, peers, slot=slot)
    except TritonAdminError as exc:
        raise DeployError(f"bringing {endpoint.grpc_address} up to slot {slot}: {exc}"
                          ) from exc
    delivery = choose(repository)
    refs = []
    for listed in slot_set(registry, slot):
        try:
            record = registry.verify(listed.name, listed.version)  # never a tampered copy
            errors = _put(record, [endpoint], delivery, deadline, progress, slot=slot)
        except (DeliveryError, RegistryError) as exc:
            errors = [str(exc)]
        if errors:
            raise DeployError(f"bringing {endpoint.grpc_address} up to slot {slot}: "
                              f"{listed.ref}: " + "; ".join(errors))
        refs.append(listed.ref)
    return refs


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
