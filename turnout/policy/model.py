"""The rollout policy as typed, frozen values (built from a validated document)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.validation.settings import (
    AdversarialSettings,
    Check,
    LatencySettings,
    OutputTolerance,
    ParitySettings,
    ValidationSettings,
)
from triton_slots.tensors import InputHint

DEFAULT_STEPS = (10, 25, 50, 100)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Step:
    weight: int
    bake_s: float = 60.0
    approval: bool = False
    # A shadow step: this percent of live requests is also sent to the candidate, whose
    # answers nobody gets (compared with the active's by the shadow gates); the weight
    # stays the previous step's (0 before the first live step).
    shadow: float = 0.0


@dataclass(frozen=True)
class MetricSpec:
    name: str
    builtin: str | None = None
    query: str | None = None
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    # Ratio thresholds only fail when the candidate also differs from the active slot by
    # more than this, in the metric's own units (ms for latency).
    min_delta: float = 0.0
    dry_run: bool = False
    # Where the value comes from: "prometheus" or "envoy" (the access-log stream).
    source: str = "prometheus"
    # A sequential test (alpha, beta) over the step's requests instead of a fixed
    # threshold on a window; needs source envoy.
    sequential: tuple[float, float] | None = None

    @property
    def relative(self) -> bool:
        return self.max_ratio is not None or self.min_ratio is not None

    def thresholds(self) -> str:
        parts = []
        for label, value in (("<=", self.max), (">=", self.min), ("ratio<=", self.max_ratio),
                             ("ratio>=", self.min_ratio)):
            if value is not None:
                parts.append(f"{label}{value:g}")
        if self.relative and self.min_delta:
            parts.append(f"delta>{self.min_delta:g}")
        return " ".join(parts)


@dataclass(frozen=True)
class GateSettings:
    interval_s: float = 5.0
    window_s: float = 15.0
    min_requests: int = 20
    failure_limit: int = 1  # a single noisy round does not roll back
    inconclusive_limit: int = 6
    consecutive_error_limit: int = 4
    on_metric_errors: str = "pause"  # or "rollback"
    metrics: tuple[MetricSpec, ...] = (
        MetricSpec("error-rate", builtin="error_rate", max=0.01),
        MetricSpec("p99-latency", builtin="p99_latency_ms", max_ratio=2.5, min_delta=5.0),
    )


@dataclass(frozen=True)
class RollbackSettings:
    automatic: bool = True
    keep_warm_s: float = 1800.0
    on_candidate_unhealthy: str = "rollback"  # or "pause"


@dataclass(frozen=True)
class ConvergenceSettings:
    min_acked: float = 1.0  # fraction of connected proxies (floor, at least one)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Policy:
    name: str
    model: str
    steps: tuple[Step, ...]
    validation_enabled: bool = True
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    gates: GateSettings = field(default_factory=GateSettings)
    rollback: RollbackSettings = field(default_factory=RollbackSettings)
    convergence: ConvergenceSettings = field(default_factory=ConvergenceSettings)
    progress_deadline_s: float = 1800.0
    # Long-lived gRPC streams opened while this rollout runs end this old (None: the
    # stack's stream_max_age_s), so they follow its weights within this bound.
    stream_max_age_s: float | None = None
    notifications: tuple[dict[str, Any], ...] = ()  # webhook receivers (raw, validated)
    source: str = ""
    document: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def model_ref(self) -> tuple[str, str]:
        name, _, version = self.model.partition(":")
        return name, version

    def minimum_duration_s(self) -> float:
        """The fastest the rollout can finish: every step needs its bake time and at
        least one gate interval of measurements (approvals add their wait)."""
        per_step = [max(s.bake_s, self.gates.interval_s) for s in self.steps]
        return sum(per_step)


def resolve_samples(samples: str | None, source: str) -> str | None:
    """A samples path relative to the policy file's directory, made absolute."""
    if not samples:
        return None
    path = Path(samples)
    if not path.is_absolute() and source and not source.startswith("<"):
        path = Path(source).resolve().parent / path
    return str(path)


def _validation(validation_doc: dict[str, Any], source: str) -> ValidationSettings:
    lat, par = validation_doc.get("latency", {}), validation_doc.get("parity", {})
    adv = validation_doc.get("adversarial", {})
    lat_d, par_d, adv_d = LatencySettings(), ParitySettings(), AdversarialSettings()
    return ValidationSettings(
        latency=LatencySettings(
            concurrency=lat.get("concurrency", lat_d.concurrency),
            requests=lat.get("requests", lat_d.requests),
            rounds=lat.get("rounds", lat_d.rounds),
            batch_sizes=tuple(lat.get("batchSizes", lat_d.batch_sizes)),
            p99_budget_ms=lat.get("p99BudgetMs", lat_d.p99_budget_ms),
            max_p99_ratio=lat.get("maxP99Ratio", lat_d.max_p99_ratio),
            min_throughput_ratio=lat.get("minThroughputRatio", lat_d.min_throughput_ratio),
            dry_run=lat.get("dryRun", False),
        ),
        parity=ParitySettings(
            samples=par.get("samples", par_d.samples),
            batch=par.get("batch", par_d.batch),
            seed=par.get("seed", par_d.seed),
            max_abs_diff=par.get("maxAbsDiff", par_d.max_abs_diff),
            max_rel_diff=par.get("maxRelDiff", par_d.max_rel_diff),
            min_top1_agreement=par.get("minTop1Agreement", par_d.min_top1_agreement),
            outputs={name: OutputTolerance(max_abs_diff=o.get("maxAbsDiff"),
                                           max_rel_diff=o.get("maxRelDiff"),
                                           class_scores=o.get("classScores", False))
                     for name, o in par.get("outputs", {}).items()},
            dry_run=par.get("dryRun", False),
        ),
        adversarial=AdversarialSettings(
            timeout_s=parse_duration(adv["timeout"]) if "timeout" in adv else adv_d.timeout_s,
            dry_run=adv.get("dryRun", False),
        ),
        checks=tuple(Check(c) for c in validation_doc.get("checks", ValidationSettings().checks)),
        samples=resolve_samples(validation_doc.get("samples"), source),
        inputs={name: InputHint(shape=tuple(h["shape"]) if "shape" in h else None,
                                low=h["range"][0] if "range" in h else None,
                                high=h["range"][1] if "range" in h else None)
                for name, h in validation_doc.get("inputs", {}).items()},
    )


def _steps(docs: list[dict[str, Any]]) -> tuple[Step, ...]:
    """Steps in order; a shadow step keeps the weight before it (0 at first)."""
    steps: list[Step] = []
    for doc in docs:
        shadow = float(doc.get("shadow", 0.0))
        weight = (steps[-1].weight if steps else 0) if shadow else doc["weight"]
        steps.append(Step(weight=weight, bake_s=parse_duration(doc.get("bake", "60s")),
                          approval=doc.get("approval", False), shadow=shadow))
    return tuple(steps)


def build_policy(doc: dict[str, Any], source: str = "") -> Policy:
    """A Policy from a schema-valid document, with defaults for what it leaves out."""
    spec = doc["spec"]
    steps_doc = spec.get("strategy", {}).get("steps")
    steps = _steps(steps_doc) if steps_doc else tuple(Step(w) for w in DEFAULT_STEPS)
    gates_doc = spec.get("gates", {})
    defaults = GateSettings()
    metrics = tuple(
        MetricSpec(name=m["name"], builtin=m.get("builtin"), query=m.get("query"),
                   max=m.get("max"), min=m.get("min"), max_ratio=m.get("maxRatio"),
                   min_ratio=m.get("minRatio"), min_delta=m.get("minDelta", 0.0),
                   source=m.get("source", "prometheus"),
                   sequential=(m["sequential"].get("alpha", 0.01),
                               m["sequential"].get("beta", 0.1)) if "sequential" in m else None,
                   dry_run=m.get("dryRun", False))
        for m in gates_doc["metrics"]
    ) if "metrics" in gates_doc else defaults.metrics
    gates = GateSettings(
        interval_s=parse_duration(gates_doc.get("interval", "5s")),
        window_s=parse_duration(gates_doc.get("window", "15s")),
        min_requests=gates_doc.get("minRequests", defaults.min_requests),
        failure_limit=gates_doc.get("failureLimit", defaults.failure_limit),
        inconclusive_limit=gates_doc.get("inconclusiveLimit", defaults.inconclusive_limit),
        consecutive_error_limit=gates_doc.get("consecutiveErrorLimit",
                                              defaults.consecutive_error_limit),
        on_metric_errors=gates_doc.get("onMetricErrors", defaults.on_metric_errors),
        metrics=metrics,
    )
    validation_doc = spec.get("validation", {})
    validation = _validation(validation_doc, source)
    rollback_doc = spec.get("rollback", {})
    convergence_doc = spec.get("convergence", {})
    return Policy(
        name=doc["metadata"]["name"],
        model=spec["model"],
        steps=steps,
        validation_enabled=validation_doc.get("enabled", True),
        validation=validation,
        gates=gates,
        rollback=RollbackSettings(
            automatic=rollback_doc.get("automatic", True),
            keep_warm_s=parse_duration(rollback_doc.get("keepWarm", "30m")),
            on_candidate_unhealthy=rollback_doc.get("onCandidateUnhealthy", "rollback"),
        ),
        convergence=ConvergenceSettings(
            min_acked=float(convergence_doc.get("minAcked", "100%").rstrip("%")) / 100.0,
            timeout_s=parse_duration(convergence_doc.get("timeout", "10s")),
        ),
        progress_deadline_s=parse_duration(spec.get("progressDeadline", "30m")),
        stream_max_age_s=(parse_duration(spec["streamMaxAge"]) if "streamMaxAge" in spec
                          else None),
        notifications=tuple(dict(n) for n in spec.get("notifications", ())),
        source=source,
        document=doc,
    )
