"""Helpers for rollout integration tests against a real local stack."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.client import ApiClient
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
    url = info.envoy_admin + "/config_dump?resource=dynamic_route_configs"
    with urllib.request.urlopen(url, timeout=2) as response:
        dump = json.load(response)
    table = dump["configs"][0]["route_config"]
    for route in table["virtual_hosts"][0]["routes"]:
        weighted = route["route"].get("weighted_clusters")
        if weighted:
            return {c["name"].removeprefix("slot_").removesuffix("_ha"): c.get("weight", 0)
                    for c in weighted["clusters"]}
    raise AssertionError("no weighted route in Envoy's config")
