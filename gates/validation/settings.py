"""Settings of the validation suite, with defaults sized for the CPU example model."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LatencySettings:
    concurrency: int = 4
    requests: int = 300  # per batch size and per slot, split over the rounds
    rounds: int = 3
    batch_sizes: tuple[int, ...] = (1, 8)
    p99_budget_ms: float = 50.0  # absolute, per batch size
    max_p99_ratio: float = 2.0  # candidate p99 / active p99
    min_throughput_ratio: float = 0.7  # candidate throughput / active throughput
    warmup_requests: int = 3  # per client thread, not measured (connection set-up)
    slot_warmup_requests: int = 200  # per slot before any round (a freshly loaded model)


@dataclass(frozen=True)
class ParitySettings:
    samples: int = 256
    batch: int = 32
    seed: int = 7
    max_abs_diff: float = 0.02
    max_rel_diff: float | None = None
    min_top1_agreement: float = 0.98


@dataclass(frozen=True)
class AdversarialSettings:
    timeout_s: float = 10.0
    oversize_factor: int = 16


@dataclass(frozen=True)
class ValidationSettings:
    latency: LatencySettings = field(default_factory=LatencySettings)
    parity: ParitySettings = field(default_factory=ParitySettings)
    adversarial: AdversarialSettings = field(default_factory=AdversarialSettings)
    checks: tuple[str, ...] = ("adversarial", "parity", "latency")
