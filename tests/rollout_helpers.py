"""Helpers for rollout integration tests against a real local stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.client import ApiClient
from turnout.proxy import route_weights
from turnout.stack import StackInfo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"
FINISHED = {"promoted", "rolled_back", "aborted", "failed"}


def policy(model: str, *, name: str, steps: str, checks: str = "[adversarial]",
           extra_gates: str = "", metrics: str | None = None) -> str:
    metrics = metrics or """
      - {name: error-rate, builtin: error_rate, max: 0.01}
      - {name: p99-latency, builtin: p99_latency_ms, maxRatio: 3.0, minDelta: 10}"""
    return f"""
apiVersion: turnout/v1
kind: Rollout
metadata: {{name: {name}}}
spec:
  model: {model}
  validation: {{checks: {checks}}}
  strategy:
    steps:{steps}
  gates:
    interval: 1s
    window: 4s
    minRequests: 5
    failureLimit: 1
    inconclusiveLimit: 30
    consecutiveErrorLimit: 3{extra_gates}
    metrics:{metrics}
  progressDeadline: 5m
"""


def wait_for(client: ApiClient, predicate: Callable[[dict[str, Any]], bool], *,
             timeout: float = 90.0, what: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rollout: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rollout = client.rollout()
        if predicate(rollout):
            return rollout
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {rollout.get('phase')} "
                         f"{rollout.get('reason')}")


def envoy_weights(info: StackInfo) -> dict[str, int]:
    weights = route_weights(info.envoy_admin)
    if not weights:
        raise AssertionError("no weighted route in Envoy's config")
    return weights
