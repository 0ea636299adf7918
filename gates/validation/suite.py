"""Run the validation checks against the candidate slot and build the report."""

from __future__ import annotations

import time
from collections.abc import Callable

from gates.validation.adversarial import check_adversarial
from gates.validation.latency import check_latency
from gates.validation.parity import check_parity
from gates.validation.report import CheckResult, ValidationReport
from gates.validation.settings import ValidationSettings
from gates.validation.target import SlotTarget
from triton_slots.registry import ArtifactRecord, RegistryBackend


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
    signature = candidate.signature(model)
    checks: dict[str, Callable[[], CheckResult]] = {
        "adversarial": lambda: check_adversarial(candidate, signature, settings.adversarial),
        "parity": lambda: check_parity(candidate, baseline, signature, settings.parity),
        "latency": lambda: check_latency(candidate, baseline, model, settings.latency),
    }
    for name in settings.checks:
        progress(f"  running {name} ...")
        try:
            result = checks[name]()
        except Exception as exc:  # an errored check is a failed check, with the reason
            result = CheckResult(name, False, f"check errored: {exc}", {"error": repr(exc)})
        progress(f"  {name}: {'PASS' if result.passed else 'FAIL'} - {result.summary}")
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
) -> ValidationReport:
    """Run the suite on the slot holding ``record`` (through Envoy at ``ingress``) against
    the baseline slot, and store the report with the artifact in the registry."""
    report = run_suite(
        ref=record.ref, digest=record.digest, model=record.model_name,
        candidate=SlotTarget(candidate_slot, ingress),
        baseline=SlotTarget(baseline_slot, ingress),
        settings=settings, progress=progress,
    )
    registry.save_report(record.name, record.version, "validation", report.as_dict())
    return report
