"""Webhooks from a real rollout with a failing gate: signed deliveries arrive at a local
receiver in order, and receivers that are down or hang do not slow the rollback."""

from __future__ import annotations

import json

import pytest

from tests.rollout_helpers import EXAMPLES, FINISHED, policy, wait_for
from tests.webhook_receiver import Receivers
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.client import ApiClient
from turnout.notify import sign
from turnout.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration
SECRET = "webhook-secret-for-tests"
STEPS = """
      - {weight: 10, bake: 3s}
      - {weight: 100, bake: 1s}"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    receivers = Receivers()
    directory = tmp_path_factory.mktemp("notify")
    try:
        info = stack.up(directory, progress=print, webhooks=[
            {"url": receivers.url("good"), "secret": SECRET}])
        try:
            registry = registry_for(directory)
            registry.push(EXAMPLES / "v3", name="classifier", version="v3")
            registry.push(EXAMPLES / "v3", name="classifier", version="v3b")
            load = LoadGenerator(info.ingress, model="classifier", concurrency=4,
                                 rate=120).start()
            try:
                yield info, ApiClient(info.api_url, info.token), receivers
            finally:
                assert load.stop().failed == 0
        finally:
            stack.down(directory)
    finally:
        receivers.close()


def _rollback(client: ApiClient, version: str, notifications: str = "") -> dict:
    text = policy(f"classifier:{version}", name=f"notify-{version}", steps=STEPS)
    client.apply(text + notifications, f"{version}.yaml")
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="rollback")
    assert done["phase"] == "rolled_back", done["reason"]
    return done


def test_signed_deliveries_in_order_for_a_failing_gate(env):
    _info, client, receivers = env
    done = _rollback(client, "v3")
    deadline = done["finished_at"] + 10
    import time
    while time.time() < deadline and not any(
            json.loads(b)["kind"] == "rolled_back" and json.loads(b)["rollout"] == done["id"]
            for _, b in receivers.got):
        time.sleep(0.1)
    mine = [(h, b) for h, b in receivers.got if json.loads(b)["rollout"] == done["id"]]
    kinds = [json.loads(b)["kind"] for _, b in mine]
    assert kinds == ["started", "step_entered", "gate_failed", "rolling_back", "rolled_back"]
    for headers, body in mine:
        assert headers[SIGNATURE_HEADER] == sign(SECRET, headers[TIMESTAMP_HEADER], body)
        assert json.loads(body)["type"] == "turnout.rollout." + json.loads(body)["kind"]
    failed = json.loads(mine[2][1])
    assert failed["message"].startswith("gate failed at 10%") and failed["traffic"] == 10


def test_dead_and_hanging_receivers_do_not_slow_the_rollback(env):
    _info, client, receivers = env
    baseline = _rollback(client, "v3")
    slow = _rollback(client, "v3b", f"""
  notifications:
    - {{url: "http://127.0.0.1:9/down"}}
    - {{url: "{receivers.url('hang')}", format: slack}}""")
    took = {name: r["rollback_acked_at"] - r["rollback_decided_at"]
            for name, r in (("without", baseline), ("with", slow))}
    print("rollback decided -> every Envoy ACKed: "
          + ", ".join(f"{k} dead/hanging receivers {v * 1e3:.1f} ms" for k, v in took.items()))
    assert took["with"] < 0.5, took
