"""Latency of a decoupled (streaming) model on the candidate slot, against budgets and
against the active slot measured the same way in the same run: time to first response
(TTFT), time between responses (inter-token latency, ITL) and responses per second, p50 and
p99, over streams sent by ``concurrency`` clients. The same limits as for unary models:
``p99_budget_ms`` bounds the TTFT p99; ``max_p99_ratio`` bounds the TTFT and ITL p99 ratios
to the active slot; ``min_throughput_ratio`` bounds the responses-per-second ratio."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import numpy as np

from gates.validation.report import CheckResult
from gates.validation.settings import LatencySettings
from gates.validation.target import SlotTarget
from triton_slots.samples import Sample
from triton_slots.signature import ModelSignature
from triton_slots.tensors import Hints, random_inputs

_FIGURES = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "responses_per_s")


def _requests(sig: ModelSignature, samples: list[Sample] | None, hints: Hints | None,
              count: int) -> list[dict[str, np.ndarray]]:
    if samples:
        return [samples[i % len(samples)].inputs for i in range(count)]
    return [random_inputs(sig, 1, seed=1000 + i, hints=hints) for i in range(count)]


def _round(target: SlotTarget, sig: ModelSignature, requests: list[dict[str, np.ndarray]],
           concurrency: int) -> dict[str, float]:
    """Send every request (one stream each) from ``concurrency`` clients."""
    first: list[float] = []
    gaps: list[float] = []
    responses = 0
    failed: list[str] = []
    lock = threading.Lock()
    queue = list(requests)

    def work() -> None:
        nonlocal responses
        client = target.client()
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    arrays = queue.pop()
                try:
                    answer = target.stream(sig, arrays, client)
                except Exception as exc:  # counted, with the first reason kept
                    with lock:
                        failed.append(str(exc))
                    continue
                with lock:
                    if answer.first_s is not None:
                        first.append(answer.first_s * 1e3)
                    gaps.extend(g * 1e3 for g in answer.gaps_s)
                    responses += len(answer.responses)
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")
    return {"streams": len(requests), "failed": len(failed),
            "ttft_p50_ms": pct(first, 50), "ttft_p99_ms": pct(first, 99),
            "itl_p50_ms": pct(gaps, 50), "itl_p99_ms": pct(gaps, 99),
            "responses_per_s": responses / wall if wall > 0 else 0.0,
            "first_error": failed[0] if failed else ""}


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 3)
                           for k in _FIGURES}
    out["streams"] = sum(r["streams"] for r in rounds)
    out["failed"] = sum(r["failed"] for r in rounds)
    out["first_error"] = next((r["first_error"] for r in rounds if r["first_error"]), "")
    return out


def check_stream_latency(candidate: SlotTarget, baseline: SlotTarget | None,
                         sig: ModelSignature, s: LatencySettings, *,
                         samples: list[Sample] | None = None,
                         hints: Hints | None = None) -> CheckResult:
    started = time.monotonic()
    per_round = max(1, s.requests // s.rounds)
    requests = _requests(sig, samples, hints, per_round)
    for target in (baseline, candidate):  # warm both: connections, a fresh model
        if target is not None:
            _round(target, sig, requests[:s.warmup_requests * s.concurrency], s.concurrency)
    cand_rounds, base_rounds = [], []
    for _ in range(s.rounds):  # alternated: one noisy moment cannot decide
        if baseline is not None:
            base_rounds.append(_round(baseline, sig, requests, s.concurrency))
        cand_rounds.append(_round(candidate, sig, requests, s.concurrency))
    cand = _median(cand_rounds)
    base = _median(base_rounds) if base_rounds else None
    problems: list[str] = []
    if cand["failed"]:
        problems.append(f"{cand['failed']} of {cand['streams']} streams failed: "
                        f"{cand['first_error'][:160]}")
    if not cand["ttft_p99_ms"] <= s.p99_budget_ms:  # NaN (no response at all) fails
        problems.append(f"TTFT p99 {cand['ttft_p99_ms']:.1f} ms > {s.p99_budget_ms} ms")
    evidence: dict[str, Any] = {"concurrency": s.concurrency, "streams": s.requests,
                                "rounds": s.rounds, "candidate": cand, "active": base,
                                "source": "samples" if samples else "random"}
    if base is None:
        problems.append("no active slot to compare with")
    else:
        ratios = {
            "ttft_p99_ratio": cand["ttft_p99_ms"] / max(base["ttft_p99_ms"], 1e-3),
            "itl_p99_ratio": cand["itl_p99_ms"] / max(base["itl_p99_ms"], 1e-3)
            if not np.isnan(base["itl_p99_ms"]) else 1.0,
            "responses_ratio": cand["responses_per_s"] / max(base["responses_per_s"], 1e-9)}
        evidence.update({k: round(v, 3) for k, v in ratios.items()})
        for key, label in (("ttft_p99_ratio", "TTFT"), ("itl_p99_ratio", "ITL")):
            if not ratios[key] <= s.max_p99_ratio:
                problems.append(f"{label} p99 {ratios[key]:.2f}x the active slot's")
        if not ratios["responses_ratio"] >= s.min_throughput_ratio:
            problems.append(f"responses/s {ratios['responses_ratio']:.2f}x the active slot's")
    evidence["problems"] = problems
    summary = "; ".join(problems) if problems else (
        f"TTFT p99 {cand['ttft_p99_ms']:.1f}ms, ITL p99 {cand['itl_p99_ms']:.1f}ms, "
        f"{cand['responses_per_s']:.0f} responses/s")
    return CheckResult("latency", not problems, summary, evidence, time.monotonic() - started,
                       dry_run=s.dry_run)
