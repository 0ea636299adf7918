"""A shadow step in a real rollout (real Triton, real Envoy, the control plane as a process):
a version that equals the active one on the validation samples but answers wrongly for
inputs whose first value is above 0.8 passes validation, then is stopped in its shadow
step and rolled back without ever serving a client (every answer the load client gets is
checked against the active version's); a good version passes the shadow step and is
promoted with no failed and no wrong answer."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.test_integration_shadow import SCORER, wrong_scorer
from turnout import stack
from turnout.client import ApiClient
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration
FINISHED = ("promoted", "rolled_back", "aborted", "failed")


def _policy(version: str, samples: Path, webhook: str = "") -> str:
    notify = f"\n  notifications:\n    - {{url: '{webhook}'}}" if webhook else ""
    return f"""apiVersion: turnout/v1
kind: Rollout
metadata: {{name: shadow-{version}}}
spec:
  model: scorer:{version}
  validation:
    checks: [parity]
    samples: {samples}
  strategy:
    steps:
      - {{shadow: 100, bake: 4s}}
      - {{weight: 50, bake: 2s}}
      - {{weight: 100, bake: 1s}}
  gates:
    interval: 500ms
    window: 3s
    minRequests: 20
    metrics:
      - {{name: disagreement, builtin: disagreement_rate, max: 0.01, source: shadow}}
      - {{name: shadow-latency, builtin: shadow_latency_ratio, max: 20, source: shadow}}
      - {{name: errors, builtin: error_rate, max: 0.01, source: envoy}}{notify}
"""


class CheckedLoad:
    """~40 requests/s through the ingress; each answer checked against v1 (SCORE =
    sum(X)), so a wrong answer any client got is counted."""

    def __init__(self, ingress: str) -> None:
        self.ingress = ingress
        self.sent = self.failed = self.wrong = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CheckedLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        rng = np.random.default_rng(3)
        client = grpcclient.InferenceServerClient(self.ingress)
        try:
            while not self._stop.is_set():
                x = rng.random(4, dtype=np.float32)
                tensor = grpcclient.InferInput("X", [4], "FP32")
                tensor.set_data_from_numpy(x)
                self.sent += 1
                try:
                    score = float(client.infer("scorer", [tensor]).as_numpy("SCORE")[0])
                except Exception:
                    self.failed += 1
                else:
                    self.wrong += abs(score - float(np.float32(x.sum()))) > 1e-4
                self._stop.wait(0.025)
        finally:
            client.close()


@pytest.fixture(scope="module")
def shadow_stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shadow-rollout")
    info = stack.up(directory, models=[SCORER], progress=print)
    try:
        registry = registry_for(directory)
        registry.push(wrong_scorer(tmp_path_factory.mktemp("wrong")), name="scorer",
                      version="wrong")
        good = tmp_path_factory.mktemp("good") / "scorer"
        shutil.copytree(SCORER, good)
        with open(good / "config.pbtxt", "a") as config:
            config.write('parameters { key: "build" value: { string_value: "2" } }\n')
        registry.push(good, name="scorer", version="good")
        samples = directory / "samples.jsonl"  # all below the wrong version's threshold
        rng = np.random.default_rng(0)
        samples.write_text("".join(json.dumps({"inputs": [{
            "name": "X", "datatype": "FP32", "shape": [4],
            "data": [float(v) for v in rng.random(4) * [0.8, 1, 1, 1]]}]}) + "\n"
            for _ in range(20)))
        yield info, samples
    finally:
        stack.down(directory)


def _run(info, policy: str) -> tuple[dict, list[dict]]:
    client = ApiClient(info.api_url, info.token, actor="test")
    started = client.apply(policy, "test")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.rollout()
        if state["id"] == started["id"] and state["phase"] in FINISHED:
            return state, client.history(rollout=state["id"])
        time.sleep(0.2)
    raise AssertionError(f"rollout did not finish: {client.rollout()}")


def test_a_version_wrong_on_live_inputs_is_stopped_in_its_shadow_step(shadow_stack):
    from tests.test_integration_notify import Receivers

    info, samples = shadow_stack
    receivers = Receivers()
    try:
        with CheckedLoad(info.ingress) as load:
            time.sleep(1)
            state, history = _run(info, _policy("wrong", samples, receivers.url("good")))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                json.loads(body)["kind"] == "rolled_back" for _, body in receivers.got):
            time.sleep(0.1)
        notices = {json.loads(body)["kind"]: json.loads(body) for _, body in receivers.got}
    finally:
        receivers.close()
    # The webhook tells why, with the comparison (digests and reasons, no payloads).
    for kind in ("gate_failed", "rolling_back", "rolled_back"):
        assert notices[kind]["shadow"]["examples"], notices[kind]
    assert "shadow" not in notices["started"]
    assert state["phase"] == "rolled_back", state["reason"]
    assert state["reason"].startswith("0% on scorer:wrong"), state["reason"]
    assert load.sent > 100 and load.failed == 0 and load.wrong == 0, vars(load)
    assert [s.get("shadow") for s in state["steps_log"]] == [100.0]  # never a live weight
    assert all(s["weight"] == 0 for s in state["steps_log"])
    kinds = [e["kind"] for e in history]
    assert "validation" in kinds  # it passed validation on the samples
    rollback = next(e for e in history if e["kind"] == "transition"
                    and "-> rolling_back" in e["message"])
    assert "disagreement" in rollback["message"] and "> max 0.01" in rollback["message"]
    shadow = rollback["evidence"]["evidence"]["shadow"]
    assert shadow["compared"] >= 20 and shadow["disagreement_rate"] > 0.05, shadow
    assert shadow["examples"] and "SCORE: max abs diff 1" in shadow["examples"][0]["why"]
    # `turnout status` and the dashboard show the comparison that stopped it.
    from turnout.cli_rollout import render_rollout
    lines = render_rollout(ApiClient(info.api_url, info.token).rollout())
    [line] = [x for x in lines if x.startswith("shadow   ")]
    assert f"{shadow['compared']} compared, {shadow['disagreed']} disagreed" in line
    assert any(x.startswith("  request ") and "SCORE: max abs diff 1" in x for x in lines)
    _dashboard_shows(info, shadow)
    entered = state["steps_log"][0]["entered_at"]
    print(json.dumps({"stage_start_to_rolled_back_s": round(state["finished_at"] - entered, 2),
                      "load": vars(load) | {"_stop": None, "_thread": None},
                      "shadow": {k: shadow[k] for k in ("compared", "disagreement_rate",
                                                        "latency_ratio")}}, default=str))


def _dashboard_shows(info, shadow: dict) -> None:
    """A real Chromium signed in with a one-time link shows the shadow figures."""
    from click.testing import CliRunner

    from tests.test_browser_dashboard import _browser, _text, _until
    from turnout.cli import main as cli

    link = CliRunner().invoke(cli, ["dashboard", "--dir", info.directory]).output.splitlines()[0]
    browser = _browser()
    try:
        browser.get(link)
        _until(browser, lambda: _text(browser, "#conn") == "live", what="a live connection")
        _until(browser, lambda: "compared" in _text(browser, "#shadow-figures"),
               what="the shadow figures")
        text = _text(browser, "#shadow-figures")
        assert f"{shadow['compared']} compared, {shadow['disagreed']} disagreed" in text, text
        assert "SCORE: max abs diff 1" in _text(browser, "#shadow-examples")
    finally:
        browser.quit()


def test_a_good_version_passes_its_shadow_step_and_is_promoted(shadow_stack):
    info, samples = shadow_stack
    with CheckedLoad(info.ingress) as load:
        time.sleep(1)
        state, history = _run(info, _policy("good", samples))
    assert state["phase"] == "promoted", state["reason"]
    assert load.failed == 0 and load.wrong == 0, vars(load)
    assert [s.get("shadow") for s in state["steps_log"]] == [100.0, None, None]
    rounds = [e for e in history if e["kind"] == "gates"
              and e["evidence"].get("evidence", {}).get("shadow")]
    assert rounds and rounds[-1]["evidence"]["evidence"]["shadow"]["disagreed"] == 0
