"""Missing data is never a pass: Prometheus stopped mid-rollout holds the rollout."""

from __future__ import annotations

import time

import pytest

from tests.rollout_helpers import EXAMPLES, envoy_weights, policy, wait_for
from triton_slots.loadgen import LoadGenerator
from triton_slots.procs import stop_pid
from turnout import stack
from turnout.client import ApiClient
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration


def test_prometheus_stopped_mid_rollout_holds_and_never_promotes(tmp_path):
    info = stack.up(tmp_path / "stack", progress=print)
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=120).start()
    try:
        registry_for(info.directory_path).push(EXAMPLES / "v2", name="classifier", version="v2")
        client = ApiClient(info.api_url, info.token, actor="pytest")
        steps = """
      - {weight: 10, bake: 2s}
      - {weight: 50, bake: 2s}
      - {weight: 100, bake: 2s}"""
        client.apply(policy("classifier:v2", name="blind", steps=steps), "blind.yaml")
        wait_for(client, lambda r: r["phase"] == "baking" and r["step"] == 0, what="step 1")
        stop_pid(info.processes["prometheus"])
        held = wait_for(client, lambda r: r["phase"] in ("paused", "promoted"), what="hold",
                        timeout=30)
        assert held["phase"] == "paused", held["reason"]
        assert "consecutive metric errors" in held["reason"]
        assert held["step"] == 0 and held["applied_weight"] == 10
        errors = [m for m in held["latest_round"]["measurements"] if m["phase"] == "Error"]
        assert errors and "query failed" in errors[0]["message"]
        # Held means held: no step, no promotion, no weight change while it waits.
        time.sleep(4)
        still = client.rollout()
        assert (still["phase"], still["step"]) == ("paused", 0)
        assert envoy_weights(info) == {"blue": 90, "green": 10}
        client.command("abort")
        done = wait_for(client, lambda r: r["phase"] == "aborted", what="abort")
        assert done["applied_weight"] == 0
        assert envoy_weights(info) == {"blue": 100, "green": 0}
    finally:
        stats = load.stop()
        stack.down(info.directory_path)
    assert stats.failed == 0, stats.errors
