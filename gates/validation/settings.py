"""Settings of the validation suite, with defaults sized for small CPU models."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from triton_slots.tensors import InputHint


class Check(StrEnum):
    """The checks of the validation suite."""

    ADVERSARIAL = "adversarial"
    PARITY = "parity"
    LATENCY = "latency"


@dataclass(frozen=True)
class LatencySettings:
    concurrency: int = 4
    requests: int = 300  # per batch size and per slot, split over the rounds
    rounds: int = 3
    batch_sizes: tuple[int, ...] = (1, 8)  # limited to what the model accepts
    p99_budget_ms: float = 50.0  # absolute, per batch size
    max_p99_ratio: float = 2.0  # candidate p99 / active p99
    min_throughput_ratio: float = 0.7  # candidate throughput / active throughput
    warmup_requests: int = 3  # per client thread, not measured (connection set-up)
    slot_warmup_requests: int = 200  # per slot before any round (a freshly loaded model)
    dry_run: bool = False


@dataclass(frozen=True)
class OutputTolerance:
    """How one output is compared. Integer, boolean and BYTES outputs are always exact;
    ``None`` inherits the suite-wide tolerance. ``class_scores`` adds a top-1 check."""

    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    class_scores: bool = False


@dataclass(frozen=True)
class ParitySettings:
    samples: int = 256  # random rows (requests, for a model that does not batch)
    batch: int = 32
    seed: int = 7
    max_abs_diff: float = 0.02
    max_rel_diff: float | None = None
    min_top1_agreement: float = 0.98  # for outputs marked class scores
    outputs: dict[str, OutputTolerance] = field(default_factory=dict)
    dry_run: bool = False

    def tolerance(self, output: str) -> tuple[float, float | None, bool]:
        own = self.outputs.get(output, OutputTolerance())
        return (self.max_abs_diff if own.max_abs_diff is None else own.max_abs_diff,
                self.max_rel_diff if own.max_rel_diff is None else own.max_rel_diff,
                own.class_scores)


@dataclass(frozen=True)
class AdversarialSettings:
    timeout_s: float = 10.0
    oversize_factor: int = 16
    dry_run: bool = False


@dataclass(frozen=True)
class ValidationSettings:
    latency: LatencySettings = field(default_factory=LatencySettings)
    parity: ParitySettings = field(default_factory=ParitySettings)
    adversarial: AdversarialSettings = field(default_factory=AdversarialSettings)
    checks: tuple[Check, ...] = (Check.ADVERSARIAL, Check.PARITY, Check.LATENCY)
    samples: str | None = None  # path of a samples file (.npz or .jsonl)
    inputs: dict[str, InputHint] = field(default_factory=dict)  # per-input shape and range

    def dry_run(self, check: Check) -> bool:
        return {Check.ADVERSARIAL: self.adversarial.dry_run, Check.PARITY: self.parity.dry_run,
                Check.LATENCY: self.latency.dry_run}[check]
