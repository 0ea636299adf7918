"""Gates on simulated traffic: false positives on A/A rollouts and detection power and time
on known degradations, at high and low traffic, for fixed thresholds and for the
sequential test. The gates are the real ones (evaluator, limits, stream windows); only the
requests are drawn: latencies log-normal (median 2 ms, sigma 0.35), errors Bernoulli
(0.1 % on the active slot), Poisson arrivals, the candidate at 10 % of the traffic, one
step baking 120 s with a round every second. Reproduce:
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


def simulate(rate: float, errors: float, slower: float, metrics: tuple[MetricSpec, ...],
             rng: np.random.Generator) -> tuple[str, float | None]:
    """One rollout step: its outcome (rolled_back, paused, promoted, undecided) and when."""
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
            if n:
                windows.record_many(
                    slot, at=start + second + rng.random(n),
                    latency_ms=rng.lognormal(np.log(median), SIGMA, n),
                    error=rng.random(n) < error_p)
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


def run(rollouts: int, seed: int = 1) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    cells = []
    started = time.monotonic()
    for traffic, rate in TRAFFIC.items():
        for condition, (errors, slower) in CONDITIONS.items():
            for method, metrics in methods().items():
                outcomes = [simulate(rate, errors, slower, metrics, rng)
                            for _ in range(rollouts)]
                times = [t for o, t in outcomes if o == "rolled_back"]
                counts = {k: sum(1 for o, _ in outcomes if o == k)
                          for k in ("rolled_back", "paused", "promoted", "undecided")}
                cell = {"traffic": traffic, "condition": condition, "method": method,
                        "rollouts": rollouts, **counts,
                        "rollback_rate": counts["rolled_back"] / rollouts,
                        "median_s_to_rollback": statistics.median(times) if times else None}
                print(f"  {traffic:<16} {condition:<14} {method:<36} {counts} "
                      f"({time.monotonic() - started:.0f}s)", flush=True)
                cells.append(cell)
    return {"cells": cells, "bake_s": BAKE_S, "interval_s": INTERVAL_S, "window_s": WINDOW_S,
            "candidate_share": SHARE, "median_ms": MEDIAN_MS, "sigma": SIGMA,
            "base_error_rate": BASE_ERRORS, "rollouts_per_cell": rollouts, "seed": seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollouts", type=int, default=200, help="per cell")
    args = parser.parse_args()
    print(f"written {write_json('gates_sim', run(args.rollouts))}")


if __name__ == "__main__":
    main()
