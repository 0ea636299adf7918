"""At 2 requests/s a good version is neither promoted on too little data nor rolled back by
noise: with sequential gates it keeps baking while the evidence builds up; with fixed
thresholds it pauses (inconclusive) instead of deciding."""

from __future__ import annotations

import time

import pytest

from tests.rollout_helpers import EXAMPLES, FINISHED, policy, wait_for
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.client import ApiClient
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration
STEPS = """
      - {weight: 10, bake: 8s}
      - {weight: 100, bake: 1s}"""
SEQUENTIAL = """
      - {name: errors, builtin: error_rate, max: 0.01, source: envoy, sequential: {}}
      - {name: p50, builtin: p50_latency_ms, maxRatio: 3, minDelta: 10, source: envoy,
         sequential: {alpha: 0.01, beta: 0.1}}"""
FIXED = """
      - {name: errors, builtin: error_rate, max: 0.01, source: envoy}
      - {name: p50, builtin: p50_latency_ms, maxRatio: 3, minDelta: 10, source: envoy}"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    directory = tmp_path_factory.mktemp("low-traffic")
    info = stack.up(directory, progress=print)
    try:
        registry = registry_for(directory)
        for version in ("v2a", "v2b"):
            registry.push(EXAMPLES / "v2", name="classifier", version=version)
        load = LoadGenerator(info.ingress, model="classifier", concurrency=1, rate=2).start()
        try:
            yield ApiClient(info.api_url, info.token)
        finally:
            assert load.stop().failed == 0
    finally:
        stack.down(directory)


def _watch(client: ApiClient, seconds: float) -> set[str]:
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(client.rollout()["phase"])
        time.sleep(0.2)
    return seen


def test_sequential_gates_keep_baking_on_too_little_evidence(env):
    client = env
    client.apply(policy("classifier:v2a", name="seq", steps=STEPS, checks="[]",
                        metrics=SEQUENTIAL), "seq.yaml")
    wait_for(client, lambda r: r["phase"] == "baking", what="baking")
    seen = _watch(client, 20)  # two and a half bakes' worth
    now = client.rollout()
    assert seen == {"baking"} and now["step"] == 0, (seen, now["reason"])
    last = now["latest_round"]["measurements"]
    errors = next(m for m in last if m["metric"] == "errors")
    assert errors["phase"] == "Inconclusive" and errors["gathering"], errors
    assert "SPRT" in errors["message"] or "no data yet" in errors["message"]
    client.command("abort")
    assert wait_for(client, lambda r: r["phase"] in FINISHED, what="abort")["phase"] == \
        "aborted"


def test_fixed_thresholds_pause_instead_of_deciding(env):
    client = env
    client.apply(policy("classifier:v2b", name="fixed", steps=STEPS, checks="[]",
                        metrics=FIXED).replace("inconclusiveLimit: 30",
                                               "inconclusiveLimit: 5"), "fixed.yaml")
    done = wait_for(client, lambda r: r["phase"] in (*FINISHED, "paused"), what="a decision")
    assert done["phase"] == "paused", done["reason"]
    assert "inconclusive" in done["reason"] and "minRequests" in done["reason"]
    client.command("abort")
    assert wait_for(client, lambda r: r["phase"] in FINISHED, what="abort")["phase"] == \
        "aborted"
