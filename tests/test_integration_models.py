"""Any Triton model, end to end: four differently shaped models served together by both
slots (real Triton, Envoy, Prometheus, the control plane as its own process). Each is
rolled out with all three checks under load on every model, then a faulty version of each
is stopped. The other models answer throughout: 0 failed requests on every model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.rollout_helpers import FINISHED, envoy_weights, wait_for
from tests.zoo import write_model
from triton_slots.loadgen import LoadGenerator
from triton_slots.routing import PREVIEW_KEY_HEADER, SERVED_BY_HEADER, SLOT_HEADER
from triton_slots.tensors import InputHint
from turnout import stack
from turnout.client import ApiClient
from turnout.errors import ApiError
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration

STEPS = """
      - {weight: 20, bake: 2s}
      - {weight: 100, bake: 2s}"""

#: What each model's policy adds: input hints and per-output settings.
EXTRA = {
    "pair": "",
    "bert": """
    inputs:
      input_ids: {shape: [12], range: [0, 1000]}
      attention_mask: {shape: [12], range: [1, 2]}
    parity:
      outputs:
        LOGITS: {classScores: true, maxAbsDiff: 0.001}""",
    "text": "",
    "classifier": """
    parity:
      outputs:
        PROBS: {classScores: true}""",
}
HINTS = {"bert": {"input_ids": InputHint(shape=(12,), low=0, high=1000),
                  "attention_mask": InputHint(shape=(12,), low=1, high=2)}}


def policy(model: str, kind: str, *, name: str, samples: str | None = None) -> str:
    samples_line = f"\n    samples: {samples}" if samples else ""
    return f"""
apiVersion: turnout/v1
kind: Rollout
metadata: {{name: {name}}}
spec:
  model: {model}
  validation:
    checks: [adversarial, parity, latency]{samples_line}{EXTRA[kind]}
    latency:
      requests: 120
      rounds: 3
      batchSizes: [1, 4]
      p99BudgetMs: 250
      maxP99Ratio: 4.0
      minThroughputRatio: 0.25
  strategy:
    steps:{STEPS}
  gates:
    interval: 1s
    window: 4s
    minRequests: 5
    failureLimit: 1
    inconclusiveLimit: 30
    consecutiveErrorLimit: 5
    metrics:
      - {{name: error-rate, builtin: error_rate, max: 0.01}}
      - {{name: p99-latency, builtin: p99_latency_ms, maxRatio: 4.0, minDelta: 10}}
  progressDeadline: 5m
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    models = [write_model(root / "v1" / kind, kind) for kind in ("pair", "bert", "text")]
    models.append(write_model(root / "v1" / "classifier", "classifier"))
    directory = root / "stack"
    info = stack.up(directory, models=models, progress=print)
    loads: dict[str, LoadGenerator] = {}
    try:
        registry = registry_for(directory)
        for kind in ("pair", "bert", "text", "classifier"):
            registry.push(write_model(root / "v2" / kind, kind), name=kind, version="v2")
            bad = "slow" if kind == "bert" else "wrong"
            registry.push(write_model(root / "bad" / kind, kind, variant=bad),
                          name=kind, version="bad")
        client = ApiClient(info.api_url, info.token, actor="pytest")
        for kind in ("pair", "bert", "text", "classifier"):
            loads[kind] = LoadGenerator(info.ingress, model=kind, concurrency=1, rate=25,
                                        hints=HINTS.get(kind)).start()
        yield info, client, registry, loads, root
    finally:
        stats = {kind: load.stop() for kind, load in loads.items()}
        stack.down(directory)
    for kind, s in stats.items():
        assert s.ok > 0 and s.failed == 0, (kind, s.ok, s.failed, dict(s.errors))


def _run(client: ApiClient, text: str, name: str) -> dict:
    # One rollout after another: each gives up the previous promotion's warm standby.
    client.apply(text, f"{name}.yaml", force=True)
    return wait_for(client, lambda r: r["phase"] in FINISHED, timeout=150, what=name)


def _validation(client: ApiClient, rollout_id: str) -> dict:
    entry = next(e for e in client.history(rollout=rollout_id) if e["kind"] == "validation"
                 or (e["kind"] == "transition" and e["phase_to"] == "failed"))
    return entry["evidence"]


@pytest.mark.parametrize("kind", ["pair", "bert", "text", "classifier"])
def test_model_rollout_passes_every_check_and_promotes(env, kind):
    info, client, registry, loads, _ = env
    failed_before = {k: load.counts()[1] for k, load in loads.items()}
    done = _run(client, policy(f"{kind}:v2", kind, name=f"{kind}-v2"), f"{kind}-v2")
    assert done["phase"] == "promoted", done["reason"]
    report = _validation(client, done["id"])
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"adversarial", "parity", "latency"}
    assert all(c["passed"] for c in checks.values()), report
    print(kind, {n: (round(c["seconds"], 2), c["summary"]) for n, c in checks.items()})
    print(kind, "adversarial:", json.dumps({n: (c["status"], c["message"][:90]) for n, c in
                                            checks["adversarial"]["evidence"]["cases"].items()}))
    assert registry.get(kind, "v2").stage == "active"
    assert envoy_weights(info)[done["candidate_slot"]] == 100
    # Every model kept answering, on both slots, through the switch.
    assert {k: load.counts()[1] for k, load in loads.items()} == failed_before


@pytest.mark.parametrize("kind", ["pair", "bert", "text", "classifier"])
def test_faulty_version_is_stopped_by_validation(env, kind):
    info, client, registry, _, root = env
    samples = None
    if kind == "pair":  # expected outputs make parity absolute; the bad version shifts SUM
        samples = _pair_samples(root)
    weights_before = envoy_weights(info)
    done = _run(client, policy(f"{kind}:bad", kind, name=f"{kind}-bad", samples=samples),
                f"{kind}-bad")
    assert done["phase"] == "failed", done["reason"]
    assert envoy_weights(info) == weights_before  # no traffic ever moved
    assert registry.get(kind, "bad").stage == "failed"
    reason = done["reason"]
    if kind == "bert":
        assert "latency" in reason and "x the active slot" in reason, reason
    elif kind == "pair":
        assert "expected output SUM" in reason and "pair-samples.jsonl:1 (id s0)" in reason, reason
        assert "ARGMAX" not in reason, reason
    elif kind == "text":
        assert "output UPPER" in reason and "differ (exact" in reason, reason
    else:
        assert "parity" in reason and "PROBS" in reason, reason


def _pair_samples(root: Path) -> str:
    """Three real requests for ``pair`` with the outputs the good version gives."""
    path = root / "pair-samples.jsonl"
    rng = np.random.default_rng(5)
    lines = []
    for index in range(3):
        a, b = rng.random(4, dtype=np.float32), rng.random(4, dtype=np.float32)
        lines.append(json.dumps({
            "id": f"s{index}",
            "inputs": [{"name": "A", "shape": [4], "datatype": "FP32", "data": a.tolist()},
                       {"name": "B", "shape": [4], "datatype": "FP32", "data": b.tolist()}],
            "expected": [
                {"name": "SUM", "shape": [4], "datatype": "FP32", "data": (a + b).tolist()},
                {"name": "ARGMAX", "shape": [1], "datatype": "INT32",
                 "data": [int(np.argmax(a * b))]}],
        }))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_samples_that_do_not_fit_are_refused_at_apply(env):
    _, client, _, _, root = env
    path = root / "bad-samples.jsonl"
    path.write_text(json.dumps({"inputs": [
        {"name": "A", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]},
        {"name": "B", "shape": [5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}) + "\n")
    before = client.rollout()["id"]
    with pytest.raises(ApiError) as refused:
        client.apply(policy("pair:v2", "pair", name="bad-samples", samples=str(path)), "x.yaml")
    assert refused.value.status == 400
    message = str(refused.value)
    assert "input 'A' is FP64; pair expects FP32" in message, message
    assert "input 'B': shape [5]; the model expects [4]" in message, message
    assert client.rollout()["id"] == before  # nothing started


def test_http_rest_inference_is_split_and_previewable(env):
    info, client, _, _, _ = env
    import http.client

    body = json.dumps({"inputs": [
        {"name": "A", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "B", "shape": [4], "datatype": "FP32", "data": [4, 3, 2, 1]}]})
    host, port = info.ingress.rsplit(":", 1)
    before = envoy_weights(info)
    client.set_traffic(green=10)
    try:
        served = {"blue": 0, "green": 0}
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(2000):
            connection.request("POST", "/v2/models/pair/infer", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status == 200, payload
            assert payload["outputs"][0]["data"] == [5.0, 5.0, 5.0, 5.0]
            served[response.getheader(SERVED_BY_HEADER)] += 1
        share = served["green"] / 2000
        print("HTTP/1.1 split 90/10:", served)
        assert 0.07 <= share <= 0.13, served
        for slot in ("blue", "green"):
            for _ in range(50):
                connection.request("POST", "/v2/models/pair/infer", body,
                                   {"Content-Type": "application/json", SLOT_HEADER: slot,
                                    PREVIEW_KEY_HEADER: info.preview_key})
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                assert response.getheader(SERVED_BY_HEADER) == slot
        connection.close()
        # An HTTP/2 client (prior knowledge) through the same listener.
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-H",
             "Content-Type: application/json", "-H", f"{SLOT_HEADER}: green",
             "-H", f"{PREVIEW_KEY_HEADER}: {info.preview_key}", "--data", body,
             f"http://{info.ingress}/v2/models/pair/infer"],
            capture_output=True, text=True, timeout=10, check=True).stdout
        assert out.startswith("HTTP/2 200"), out
        assert f"{SERVED_BY_HEADER}: green" in out, out
    finally:
        client.set_traffic(green=before["green"])
