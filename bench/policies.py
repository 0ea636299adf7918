"""Rollout policies used by the benchmarks (fast timings for a 2-core machine)."""

from __future__ import annotations


def policy(model: str, *, name: str, steps: list[tuple[int, str]], interval: str = "1s",
           window: str = "4s", failure_limit: int = 1) -> str:
    step_lines = "".join(f"\n      - {{weight: {w}, bake: {b}}}" for w, b in steps)
    return f"""
apiVersion: turnout/v1
kind: Rollout
metadata: {{name: {name}}}
spec:
  model: {model}
  validation: {{checks: [adversarial]}}
  strategy:
    steps:{step_lines}
  gates:
    interval: {interval}
    window: {window}
    minRequests: 5
    failureLimit: {failure_limit}
    inconclusiveLimit: 60
    consecutiveErrorLimit: 10
    metrics:
      - {{name: error-rate, builtin: error_rate, max: 0.01}}
      - {{name: p99-latency, builtin: p99_latency_ms, maxRatio: 2.5}}
  progressDeadline: 10m
"""


FINISHED = {"promoted", "rolled_back", "aborted", "failed"}
