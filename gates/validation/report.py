"""Verdicts and evidence of the validation suite, as JSON and as a table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """One check: ``passed`` only with evidence that it passed (missing data fails).
    A ``dry_run`` check is run and recorded but never decides."""

    name: str
    passed: bool
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def verdict(self) -> str:
        return ("PASS" if self.passed else "FAIL") + (" (dry run)" if self.dry_run else "")


@dataclass
class ValidationReport:
    ref: str
    digest: str
    slot: str
    baseline_slot: str | None
    started: float
    seconds: float = 0.0
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every deciding check passed. With no checks configured nothing was validated,
        which the policy chose (``checks: []``) and ``turnout plan`` says."""
        return all(c.passed for c in self.checks if not c.dry_run)

    @property
    def summary(self) -> str:
        """The failed checks with their reasons, or which checks passed."""
        if not self.checks:
            return "no checks configured: nothing validated"
        failed = [f"{c.name}: {c.summary}" for c in self.checks if not c.passed and not c.dry_run]
        dry = [f"{c.name} (dry run) {'ok' if c.passed else 'FAILED: ' + c.summary}"
               for c in self.checks if c.dry_run]
        return "; ".join(failed + dry) if failed else ", ".join(
            [f"{c.name} ok" for c in self.checks if not c.dry_run] + dry)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        checks = [CheckResult(**c) for c in data.get("checks", [])]
        fields = {k: v for k, v in data.items() if k not in ("checks", "passed")}
        return cls(**fields, checks=checks)

    def table(self) -> str:
        width = max((len(c.name) for c in self.checks), default=10)
        lines = [
            f"validation of {self.ref} ({self.digest[:12]}) on slot {self.slot}"
            + (f", compared with {self.baseline_slot}" if self.baseline_slot else ""),
            f"{'check':<{width}}  verdict  seconds  evidence",
        ]
        for check in self.checks:
            lines.append(f"{check.name:<{width}}  {check.verdict:<7}  {check.seconds:>7.2f}  "
                         f"{check.summary}")
        lines.append(f"{'overall':<{width}}  {'PASS' if self.passed else 'FAIL':<7}  "
                     f"{self.seconds:>7.2f}")
        return "\n".join(lines)
