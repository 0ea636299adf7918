"""Run the validation checks against the candidate slot and build the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gates.validation.adversarial import check_adversarial
from gates.validation.latency import check_latency
from gates.validation.parity import check_parity
from gates.validation.report import CheckResult, ValidationReport
from gates.validation.settings import Check, ValidationSettings
from gates.validation.stream_latency import check_stream_latency
from gates.validation.target import SlotTarget
from triton_slots.registry import ArtifactRecord, RegistryBackend
from triton_slots.samples import Sample, SamplesError, check_samples, load_samples
from triton_slots.signature import ModelSignature


def samples_for(settings: ValidationSettings, sig: ModelSignature) -> list[Sample] | None:
    """The policy's samples, checked against the signature; raises :class:`SamplesError`
    naming the input and the mismatch."""
    if not settings.samples:
        return None
    samples = load_samples(Path(settings.samples), sig)
    problems = check_samples(sig, samples)
    if problems:
        raise SamplesError(f"{settings.samples} does not fit {sig.name}: "
                           + "; ".join(problems))
    return samples


def run_suite(
    *,
    ref: str,
    digest: str,
    model: str,
    candidate: SlotTarget,
    baseline: SlotTarget | None,
    settings: ValidationSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ValidationReport:
    settings = settings or ValidationSettings()
    report = ValidationReport(ref=ref, digest=digest, slot=candidate.slot,
                              baseline_slot=baseline.slot if baseline else None,
                              started=time.time())
    t0 = time.monotonic()
    if not settings.checks:
        progress("  no checks configured: nothing validated")
        return report
    for target in (candidate, baseline):
        if target is not None:
            try:
                waited = target.wait_ready(model)
            except TimeoutError as exc:
                report.checks.append(CheckResult("readiness", False, str(exc)))
                report.seconds = time.monotonic() - t0
                return report
            if waited > 0.05:
                progress(f"  {model} ready on {target.slot} through Envoy after {waited:.2f}s")
    signature = candidate.signature(model)
    progress(f"  signature {signature.describe()}")
    hints = settings.inputs
    try:
        samples = samples_for(settings, signature)
    except SamplesError as exc:
        report.checks.append(CheckResult("samples", False, str(exc), {"error": str(exc)}))
        report.seconds = time.monotonic() - t0
        return report
    checks: dict[Check, Callable[[], CheckResult]] = {
        Check.ADVERSARIAL: lambda: check_adversarial(candidate, signature,
                                                     settings.adversarial, hints),
        Check.PARITY: lambda: check_parity(candidate, baseline, signature, settings.parity,
                                           samples=samples, hints=hints),
        Check.LATENCY: lambda: (check_stream_latency if signature.decoupled else check_latency)(
            candidate, baseline, signature, settings.latency, samples=samples, hints=hints),
    }
    for name in settings.checks:
        progress(f"  running {name} ...")
        try:
            result = checks[Check(name)]()
        except Exception as exc:  # an errored check is a failed check, with the reason
            result = CheckResult(str(name), False, f"check errored: {exc}",
                                 {"error": repr(exc)}, dry_run=settings.dry_run(Check(name)))
        progress(f"  {name}: {result.verdict} - {result.summary}")
        report.checks.append(result)
    report.seconds = time.monotonic() - t0
    return report


def validate_artifact(
    registry: RegistryBackend,
    record: ArtifactRecord,
    *,
    ingress: str,
    candidate_slot: str,
    baseline_slot: str,
    settings: ValidationSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
    preview_key: str = "",
) -> ValidationReport:
    """Run the suite on the slot holding ``record`` (through Envoy at ``ingress``, the
    address the caller reaches Envoy at) against the baseline slot, and store the report
    with the artifact in the registry."""
    report = run_suite(
        ref=record.ref, digest=record.digest, model=record.model_name,
        candidate=SlotTarget(candidate_slot, ingress, preview_key),
        baseline=SlotTarget(baseline_slot, ingress, preview_key),
        settings=settings, progress=progress,
    )
    registry.save_report(record.name, record.version, "validation", report.as_dict())
    return report
