"""Rollouts end to end on the real local stack: Triton pools, Envoy, the control plane as
its own process, and a real Prometheus feeding the gates."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.rollout_helpers import EXAMPLES, FINISHED, envoy_weights, policy, wait_for
from triton_slots.loadgen import LoadGenerator
from triton_slots.procs import pid_alive
from turnout import stack
from turnout.client import ApiClient
from turnout.errors import ApiError
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration

FAST_STEPS = """
      - {weight: 10, bake: 2s}
      - {weight: 50, bake: 2s}
      - {weight: 100, bake: 2s}"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rollout-stack")
    info = stack.up(directory, progress=print)
    try:
        registry = registry_for(directory)
        registry.push(EXAMPLES / "v2", name="classifier", version="v2")
        registry.push(EXAMPLES / "v3", name="classifier", version="v3")
        registry.push(EXAMPLES / "v2", name="classifier", version="v2b")
        client = ApiClient(info.api_url, info.token, actor="pytest")
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=120).start()
        yield info, client, registry, load
        stats = load.stop()
        assert stats.failed == 0, stats.errors
    finally:
        stack.down(directory)


def test_good_version_is_promoted(env):
    info, client, registry, load = env
    ok_before, failed_before = load.counts()
    client.apply(policy("classifier:v2", name="good", steps=FAST_STEPS,
                        checks="[adversarial, parity]"), "good.yaml")
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="promotion")
    assert done["phase"] == "promoted", done["reason"]
    assert [s["weight"] for s in done["steps_log"]] == [10, 50, 100]
    assert envoy_weights(info) == {"blue": 0, "green": 100}
    assert (registry.get("classifier", "v2").stage, registry.get("classifier", "v2").slot) \
        == ("active", "green")
    assert registry.get("classifier", "v1").stage == "standby"
    ok_after, failed_after = load.counts()
    assert failed_after == failed_before and ok_after > ok_before
    kinds = [(e["kind"], e["phase_to"]) for e in client.history(rollout=done["id"])]
    assert ("apply", "pending") in kinds and ("transition", "promoted") in kinds
    assert sum(1 for k, _ in kinds if k == "weights") == 3


def test_faulty_version_is_rolled_back_by_a_gate(env):
    info, client, registry, load = env
    failed_before = load.counts()[1]
    # Right after the good one's promotion, blue is its warm standby: the API refuses to
    # apply onto it (409, nothing started) unless the operator gives that rollback up.
    promoted = client.rollout()["id"]
    with pytest.raises(ApiError) as refused:
        client.apply(policy("classifier:v3", name="faulty", steps=FAST_STEPS), "faulty.yaml")
    assert refused.value.status == 409
    assert str(refused.value).startswith("slot blue is the standby kept warm for an instant "
                                         "rollback of good for ")
    assert client.rollout()["id"] == promoted
    client.apply(policy("classifier:v3", name="faulty", steps=FAST_STEPS), "faulty.yaml",
                 force=True)
    forced = client.history(rollout=client.rollout()["id"])[0]
    assert (forced["kind"], forced["actor"]) == ("force", "stack-admin"), forced
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="rollback")
    assert done["phase"] == "rolled_back", done["reason"]
    assert done["candidate_slot"] == "blue"
    assert envoy_weights(info) == {"blue": 0, "green": 100}
    history = client.history(rollout=done["id"])
    decision = next(e for e in history
                    if e["kind"] == "transition" and e["phase_to"] == "rolling_back")
    assert "p99-latency" in decision["message"]
    failing = [m for m in decision["evidence"]["measurements"] if m["phase"] == "Failed"]
    assert failing and failing[0]["ratio"] > 3.0
    assert done["rollback_acked_at"] - done["first_failure_at"] < 5.0
    v3 = registry.get("classifier", "v3")  # taken back by a gate: not a validation failure
    assert v3.stage == "rolled_back" and v3.stage_reason.startswith(
        "rolled_back by a gate: gate failed at "), v3.stage_reason
    assert registry.get("classifier", "v2").stage == "active"
    assert load.counts()[1] == failed_before


def test_sigkill_mid_shift_resumes_same_step_and_weights(env):
    info, client, _, load = env
    failed_before = load.counts()[1]
    slow = """
      - {weight: 10, bake: 1s}
      - {weight: 40, bake: 600s}
      - {weight: 100, bake: 1s}"""
    client.apply(policy("classifier:v2b", name="restart", steps=slow), "restart.yaml")
    before = wait_for(client, lambda r: r["phase"] == "baking" and r["step"] == 1,
                      what="step 2")
    assert envoy_weights(info) == {"blue": 40, "green": 60}
    observed: list[dict[str, int]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            observed.append(envoy_weights(info))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        pid = stack.StackInfo.load(info.directory_path).processes["controlplane"]
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.0)
        assert not pid_alive(pid)
        with pytest.raises(ApiError):
            client.status()
        stack.restart_control_plane(info.directory_path)
        after = wait_for(client, lambda r: r["phase"] == "baking", what="resume")
        time.sleep(1.0)
    finally:
        watching.set()
        watcher.join()
    assert (after["id"], after["step"], after["target_weight"]) == \
        (before["id"], 1, 40)
    assert after["step_entered_at"] == before["step_entered_at"]
    assert set(map(lambda w: tuple(sorted(w.items())), observed)) == {
        (("blue", 40), ("green", 60))}, "weights moved during the restart"
    assert client.status()["weights"] == {"blue": 40, "green": 60}
    kinds = [e["kind"] for e in client.history(rollout=after["id"])]
    assert "resume" in kinds
    assert load.counts()[1] == failed_before
    # Finish it: skip the long bake and the gates.
    client.command("promote", full=True)
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="full promotion")
    assert done["phase"] == "promoted"
    assert envoy_weights(info) == {"blue": 100, "green": 0}


def test_rollback_after_promotion_is_one_push(env):
    info, client, registry, load = env
    failed_before = load.counts()[1]
    started = time.monotonic()
    client.command("rollback")
    done = wait_for(client, lambda r: r["phase"] in FINISHED, what="rollback", timeout=10)
    elapsed = time.monotonic() - started
    assert done["phase"] == "rolled_back"
    assert envoy_weights(info) == {"blue": 0, "green": 100}
    assert elapsed < 2.0
    assert registry.get("classifier", "v2").stage == "active"
    assert load.counts()[1] == failed_before
