"""Rollout policies used by the benchmarks (fast timings for a 2-core machine)."""

from __future__ import annotations

ERROR_RATE = "\n      - {name: error-rate, builtin: error_rate, max: 0.01}"
P99 = "\n      - {name: p99-latency, builtin: p99_latency_ms, maxRatio: 2.5, minDelta: 5}"


def policy(model: str, *, name: str, steps: list[tuple[int, str]], interval: str = "1s",
           window: str = "4s", failure_limit: int = 1, checks: str = "[adversarial]",
           metrics: str = ERROR_RATE + P99, consecutive_error_limit: int = 10,
           deadline: str = "10m", extra: str = "") -> str:
    """``extra``: more ``spec`` fields, each line indented by two spaces."""
    step_lines = "".join(f"\n      - {{weight: {w}, bake: {b}}}" for w, b in steps)
    return f"""
apiVersion: turnout/v1
kind: Rollout
metadata: {{name: {name}}}
spec:
  model: {model}
  validation: {{checks: {checks}}}
  strategy:
    steps:{step_lines}
  gates:
    interval: {interval}
    window: {window}
    minRequests: 5
    failureLimit: {failure_limit}
    inconclusiveLimit: 60
    consecutiveErrorLimit: {consecutive_error_limit}
    metrics:{metrics}
  progressDeadline: {deadline}{extra}
"""


FINISHED = {"promoted", "rolled_back", "aborted", "failed"}
