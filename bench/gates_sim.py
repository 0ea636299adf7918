"""Gates on simulated traffic: false positives on A/A rollouts and detection power and time
on known degradations, at high and low traffic, for fixed thresholds and for the
sequential test. The gates are the real ones (evaluator, limits, stream windows); only the
requests are drawn: latencies log-normal (median 2 ms, sigma 0.35), errors Bernoulli
(0.1 % on the active slot), Poisson arrivals, the candidate at 10 % of the traffic, one
step baking 120 s with a round every second. Streams (decoupled models) are simulated too:
the token-level gates of ``examples/rollout-stream-v2.yaml`` (TTFT p99 at most 200 ms and
3x the active slot's when 100 ms more; ITL p99 3x when 50 ms more; stream errors 1 %) on
streams of 8 tokens, TTFT log-normal (median 15 ms, sigma 0.5), 3 ms between tokens (sigma
0.3): A/A (both slots the same) and a first token 250 ms late. Reproduce:
``.venv/bin/python -m bench.gates_sim --rollouts 200``."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np

from bench.common import write_json
from gates.metrics.evaluator import Decision, GateRound, Limits, assess, measure_round
from gates.metrics.sources import EnvoyStreamSource
from gates.metrics.windows import SlotWindows
from turnout.policy import MetricSpec

MEDIAN_MS, SIGMA, BASE_ERRORS = 2.0, 0.35, 0.001
BAKE_S, INTERVAL_S, WINDOW_S, SHARE = 120, 1.0, 10.0, 0.10
LIMITS = Limits(failure_limit=1, inconclusive_limit=30, consecutive_error_limit=5)
TRAFFIC = {"high (200 req/s)": 200.0, "low (2 req/s)": 2.0}
CONDITIONS = {"A/A": (0.0, 1.0), "errors +1 %": (0.01, 1.0), "errors +5 %": (0.05, 1.0),
              "latency +10 %": (0.0, 1.1), "latency +50 %": (0.0, 1.5)}


TTFT_MS, TTFT_SIGMA, ITL_MS, ITL_SIGMA, TOKENS = 15.0, 0.5, 3.0, 0.3, 8
STREAM_TRAFFIC = {"streams (30/s)": 30.0, "few streams (3/s)": 3.0}
STREAM_CONDITIONS = {"A/A": 0.0, "first token +250 ms": 250.0}


def stream_gates() -> tuple[MetricSpec, ...]:
    return (MetricSpec("ttft", builtin="ttft_p99_ms", max=200, max_ratio=3, min_delta=100,
                       source="envoy"),
            MetricSpec("itl", builtin="itl_p99_ms", max_ratio=3, min_delta=50,
                       source="envoy"),
            MetricSpec("stream-errors", builtin="stream_error_rate", max=0.01,
                       source="envoy"))


def methods() -> dict[str, tuple[MetricSpec, ...]]:
    fixed = (MetricSpec("errors", builtin="error_rate", max=0.01, source="envoy"),
             MetricSpec("p50", builtin="p50_latency_ms", max_ratio=1.25, source="envoy"))
    sequential = (MetricSpec("errors", builtin="error_rate", max=0.01, source="envoy",
                             sequential=(0.01, 0.1)),
                  MetricSpec("p50", builtin="p50_latency_ms", max_ratio=1.25, source="envoy",
                             sequential=(0.01, 0.1)))
    return {"fixed thresholds": fixed, "sequential (alpha 0.01, beta 0.1)": sequential}


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _requests(windows: SlotWindows, slot: str, n: int, at: np.ndarray, median: float,
              error_p: float, rng: np.random.Generator) -> None:
    windows.record_many(slot, at=at, latency_ms=rng.lognormal(np.log(median), SIGMA, n),
                        error=rng.random(n) < error_p)


def _streams(windows: SlotWindows, slot: str, n: int, at: np.ndarray, late_ms: float,
             rng: np.random.Generator) -> None:
    """``n`` streams of ``TOKENS`` responses; their duration is TTFT plus the gaps."""
    ttft = rng.lognormal(np.log(TTFT_MS), TTFT_SIGMA, n) + late_ms
    gaps = rng.lognormal(np.log(ITL_MS), ITL_SIGMA, (n, TOKENS - 1)).sum(axis=1)
    windows.record_many(slot, at=at, latency_ms=ttft + gaps, error=np.zeros(n, bool),
                        responses=np.full(n, TOKENS), ttft_ms=ttft)


def simulate(rate: float, errors: float, slower: float, metrics: tuple[MetricSpec, ...],
             rng: np.random.Generator, *, late_ms: float | None = None
             ) -> tuple[str, float | None]:
    """One rollout step: its outcome (rolled_back, paused, promoted, undecided) and when.
    ``late_ms`` given: the traffic is streams, the candidate's first token that late."""
    clock = Clock()
    windows = SlotWindows(clock=clock)
    source = EnvoyStreamSource(windows)
    start = clock.now
    rounds: list[GateRound] = []
    for second in range(BAKE_S):
        for slot, share, median, error_p in (
                ("blue", 1 - SHARE, MEDIAN_MS, BASE_ERRORS),
                ("green", SHARE, MEDIAN_MS * slower, BASE_ERRORS + errors)):
            n = rng.poisson(rate * share)
            if not n:
                continue
            at = start + second + rng.random(n)
            if late_ms is None:
                _requests(windows, slot, n, at, median, error_p, rng)
            else:
                _streams(windows, slot, n, at, late_ms if slot == "green" else 0.0, rng)
        clock.now = start + second + 1
        rounds.append(measure_round(None, metrics, candidate="green", active="blue",
                                    window_s=WINDOW_S, min_requests=20, baselines={},
                                    stream=source, step_s=clock.now - start))
        verdict = assess(rounds, LIMITS)
        if verdict.decision is Decision.FAILED:
            return "rolled_back", clock.now - start
        if verdict.decision is Decision.HOLD:
            return "paused", clock.now - start
    verdict = assess(rounds, LIMITS)
    return ("promoted" if verdict.decision is Decision.PASS else "undecided"), None


def _counts(outcomes: list[tuple[str, float | None]]) -> dict[str, int]:
    return {k: sum(1 for o, _ in outcomes if o == k)
            for k in ("rolled_back", "paused", "promoted", "undecided")}


def _cell(traffic: str, condition: str, method: str, rollouts: int,
          outcomes: list[tuple[str, float | None]]) -> dict[str, object]:
    times = [t for o, t in outcomes if o == "rolled_back"]
    counts = _counts(outcomes)
    return {"traffic": traffic, "condition": condition, "method": method,
            "rollouts": rollouts, **counts, "rollback_rate": counts["rolled_back"] / rollouts,
            "median_s_to_rollback": statistics.median(times) if times else None}


def run(rollouts: int, seed: int = 1) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    cells = []
    started = time.monotonic()
    for traffic, rate in TRAFFIC.items():
        for condition, (errors, slower) in CONDITIONS.items():
            for method, metrics in methods().items():
                outcomes = [simulate(rate, errors, slower, metrics, rng)
                            for _ in range(rollouts)]
                cells.append(_cell(traffic, condition, method, rollouts, outcomes))
                print(f"  {traffic:<16} {condition:<14} {method:<36} {_counts(outcomes)} "
                      f"({time.monotonic() - started:.0f}s)", flush=True)
    for traffic, rate in STREAM_TRAFFIC.items():
        for condition, late_ms in STREAM_CONDITIONS.items():
            method = "token gates (fixed thresholds)"
            outcomes = [simulate(rate, 0.0, 1.0, stream_gates(), rng, late_ms=late_ms)
                        for _ in range(rollouts)]
            cells.append(_cell(traffic, condition, method, rollouts, outcomes))
            print(f"  {traffic:<16} {condition:<20} {method:<32} "
                  f"{_counts(outcomes)} ({time.monotonic() - started:.0f}s)", flush=True)
    return {"cells": cells, "bake_s": BAKE_S, "interval_s": INTERVAL_S, "window_s": WINDOW_S,
            "candidate_share": SHARE, "median_ms": MEDIAN_MS, "sigma": SIGMA,
            "base_error_rate": BASE_ERRORS, "rollouts_per_cell": rollouts, "seed": seed,
            "streams": {"ttft_median_ms": TTFT_MS, "ttft_sigma": TTFT_SIGMA,
                        "itl_median_ms": ITL_MS, "itl_sigma": ITL_SIGMA, "tokens": TOKENS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollouts", type=int, default=200, help="per cell")
    args = parser.parse_args()
    print(f"written {write_json('gates_sim', run(args.rollouts))}")


if __name__ == "__main__":
    main()
