"""Latency under load on the candidate slot, against budgets and against the active slot
measured the same way in the same run. Requests come from the user's samples or from the
model's signature, at the batch sizes the model accepts."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from gates.validation.report import CheckResult
from gates.validation.settings import LatencySettings
from gates.validation.target import SlotTarget
from triton_slots.loadgen import LoadGenerator
from triton_slots.samples import Sample
from triton_slots.signature import ModelSignature
from triton_slots.tensors import Hints


@dataclass(frozen=True)
class _Load:
    """What every round sends: the model, its signature and the request data."""

    sig: ModelSignature
    hints: Hints | None
    samples: list[Sample] | None

    def generator(self, target: SlotTarget, batch: int, s: LatencySettings, *,
                  limit: int, measured: bool) -> LoadGenerator:
        return LoadGenerator(
            target.address, model=self.sig.name, concurrency=s.concurrency, batch=batch,
            headers=target.headers, limit=limit, keep_latencies=measured,
            warmup=s.warmup_requests if measured else 0, signature=self.sig,
            hints=self.hints,
            requests=[x.inputs for x in self.samples] if self.samples else None)


def _round(target: SlotTarget, load_spec: _Load, batch: int, requests: int,
           s: LatencySettings) -> dict[str, float]:
    load = load_spec.generator(target, batch, s, limit=requests, measured=True)
    started = time.perf_counter()
    stats = load.start().wait()
    wall = time.perf_counter() - started
    return {
        "requests": stats.sent,
        "failed": stats.failed,
        "p50_ms": stats.percentile(50),
        "p95_ms": stats.percentile(95),
        "p99_ms": stats.percentile(99),
        "throughput_rps": stats.ok / wall if wall > 0 else 0.0,
    }


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    out = {key: round(statistics.median(r[key] for r in rounds), 3)
           for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")}
    out["requests"] = sum(r["requests"] for r in rounds)
    out["failed"] = sum(r["failed"] for r in rounds)
    return out


def _measure_pair(candidate: SlotTarget, baseline: SlotTarget | None, load_spec: _Load,
                  batch: int, s: LatencySettings
                  ) -> tuple[dict[str, float], dict[str, float] | None]:
    """Alternate baseline and candidate rounds (same run, same machine state) and take
    the median of each figure over the rounds: one noisy moment cannot decide."""
    per_round = max(1, s.requests // s.rounds)
    for target in (baseline, candidate):
        if target is not None and s.slot_warmup_requests:
            load_spec.generator(target, batch, s, limit=s.slot_warmup_requests,
                                measured=False).start().wait()
    cand_rounds, base_rounds = [], []
    for _ in range(s.rounds):
        if baseline is not None:
            base_rounds.append(_round(baseline, load_spec, batch, per_round, s))
        cand_rounds.append(_round(candidate, load_spec, batch, per_round, s))
    return _median(cand_rounds), (_median(base_rounds) if base_rounds else None)


def check_latency(
    candidate: SlotTarget, baseline: SlotTarget | None, sig: ModelSignature,
    s: LatencySettings, *, samples: list[Sample] | None = None, hints: Hints | None = None,
) -> CheckResult:
    started = time.monotonic()
    load_spec = _Load(sig, hints, samples)
    # Samples are whole requests: their own batch size. Otherwise the sizes the model takes.
    batch_sizes = (0,) if samples else sig.accepted_batch_sizes(s.batch_sizes)
    evidence: dict[str, object] = {"concurrency": s.concurrency, "requests": s.requests,
                                   "rounds": s.rounds, "batch_sizes": list(batch_sizes),
                                   "source": "samples" if samples else "random",
                                   "budgets": {"p99_ms": s.p99_budget_ms,
                                               "max_p99_ratio": s.max_p99_ratio,
                                               "min_throughput_ratio": s.min_throughput_ratio}}
    problems: list[str] = []
    parts: list[str] = []
    per_batch: dict[str, object] = {}
    for batch in batch_sizes:
        cand, base = _measure_pair(candidate, baseline, load_spec, max(batch, 1), s)
        row: dict[str, object] = {"candidate": cand, "active": base}
        if cand["failed"]:
            problems.append(f"batch {batch}: {cand['failed']} of {cand['requests']} requests "
                            "failed")
        if not cand["p99_ms"] <= s.p99_budget_ms:  # NaN (no answers) fails
            problems.append(f"batch {batch}: p99 {cand['p99_ms']:.1f} ms > {s.p99_budget_ms} ms")
        if base is None:
            problems.append("no active slot to compare with")
        else:
            p99_ratio = cand["p99_ms"] / max(base["p99_ms"], 1e-3)
            tput_ratio = cand["throughput_rps"] / max(base["throughput_rps"], 1e-9)
            row.update(p99_ratio=round(p99_ratio, 3), throughput_ratio=round(tput_ratio, 3))
            if not p99_ratio <= s.max_p99_ratio:
                problems.append(f"batch {batch}: p99 {p99_ratio:.2f}x the active slot's")
            if not tput_ratio >= s.min_throughput_ratio:
                problems.append(f"batch {batch}: throughput {tput_ratio:.2f}x the active slot's")
        per_batch[str(batch)] = row
        label = "samples" if batch == 0 else f"b{batch}"
        parts.append(f"{label} p99 {cand['p99_ms']:.1f}ms"
                     + (f" ({row['p99_ratio']}x)" if base else "")
                     + f" {cand['throughput_rps']:.0f}rps")
    evidence["batches"] = per_batch
    evidence["problems"] = problems
    summary = "; ".join(problems) if problems else ", ".join(parts)
    return CheckResult("latency", not problems, summary, evidence, time.monotonic() - started,
                       dry_run=s.dry_run)
