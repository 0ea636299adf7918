"""Latency under load on the candidate slot, against budgets and against the active slot
measured the same way in the same run."""

from __future__ import annotations

import statistics
import time

from gates.validation.report import CheckResult
from gates.validation.settings import LatencySettings
from gates.validation.target import SlotTarget
from turnout.loadgen import LoadGenerator


def _round(target: SlotTarget, model: str, batch: int, requests: int, s: LatencySettings
           ) -> dict[str, float]:
    load = LoadGenerator(target.address, model=model, concurrency=s.concurrency, batch=batch,
                         headers=target.headers, limit=requests, keep_latencies=True,
                         warmup=s.warmup_requests)
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


def _measure_pair(candidate: SlotTarget, baseline: SlotTarget | None, model: str, batch: int,
                  s: LatencySettings) -> tuple[dict[str, float], dict[str, float] | None]:
    """Alternate baseline and candidate rounds (same run, same machine state) and take
    the median of each figure over the rounds: one noisy moment cannot decide."""
    per_round = max(1, s.requests // s.rounds)
    for target in (baseline, candidate):
        if target is not None and s.slot_warmup_requests:
            LoadGenerator(target.address, model=model, concurrency=s.concurrency, batch=batch,
                          headers=target.headers, limit=s.slot_warmup_requests).start().wait()
    cand_rounds, base_rounds = [], []
    for _ in range(s.rounds):
        if baseline is not None:
            base_rounds.append(_round(baseline, model, batch, per_round, s))
        cand_rounds.append(_round(candidate, model, batch, per_round, s))
    return _median(cand_rounds), (_median(base_rounds) if base_rounds else None)


def check_latency(
    candidate: SlotTarget, baseline: SlotTarget | None, model: str, s: LatencySettings
) -> CheckResult:
    started = time.monotonic()
    evidence: dict[str, object] = {"concurrency": s.concurrency, "requests": s.requests,
                                   "rounds": s.rounds,
                                   "budgets": {"p99_ms": s.p99_budget_ms,
                                               "max_p99_ratio": s.max_p99_ratio,
                                               "min_throughput_ratio": s.min_throughput_ratio}}
    problems: list[str] = []
    parts: list[str] = []
    per_batch: dict[str, object] = {}
    for batch in s.batch_sizes:
        cand, base = _measure_pair(candidate, baseline, model, batch, s)
        row: dict[str, object] = {"candidate": cand, "active": base}
        if cand["failed"]:
            problems.append(f"batch {batch}: {cand['failed']} requests failed")
        if cand["p99_ms"] > s.p99_budget_ms:
            problems.append(f"batch {batch}: p99 {cand['p99_ms']:.1f} ms > {s.p99_budget_ms} ms")
        if base is None:
            problems.append("no active slot to compare with")
        else:
            p99_ratio = cand["p99_ms"] / max(base["p99_ms"], 1e-3)
            tput_ratio = cand["throughput_rps"] / max(base["throughput_rps"], 1e-9)
            row.update(p99_ratio=round(p99_ratio, 3), throughput_ratio=round(tput_ratio, 3))
            if p99_ratio > s.max_p99_ratio:
                problems.append(f"batch {batch}: p99 {p99_ratio:.2f}x the active slot's")
            if tput_ratio < s.min_throughput_ratio:
                problems.append(f"batch {batch}: throughput {tput_ratio:.2f}x the active slot's")
        per_batch[str(batch)] = row
        parts.append(f"b{batch} p99 {cand['p99_ms']:.1f}ms"
                     + (f" ({row['p99_ratio']}x)" if base else "")
                     + f" {cand['throughput_rps']:.0f}rps")
    evidence["batches"] = per_batch
    evidence["problems"] = problems
    summary = "; ".join(problems) if problems else ", ".join(parts)
    return CheckResult("latency", not problems, summary, evidence, time.monotonic() - started)
