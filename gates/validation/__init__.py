"""The validation suite run on the idle slot before it gets any traffic: latency,
adversarial inputs and output parity with the active slot. Each check returns a verdict
and its evidence; the report is stored with the artifact in the registry."""

from gates.validation.report import CheckResult, ValidationReport
from gates.validation.settings import ValidationSettings
from gates.validation.suite import run_suite, validate_artifact
from gates.validation.target import SlotTarget

__all__ = ["CheckResult", "SlotTarget", "ValidationReport", "ValidationSettings", "run_suite",
           "validate_artifact"]
