"""Two control-plane replicas on a real PostgreSQL, one Envoy on each, real Triton pools
and Prometheus: the leader is killed with SIGKILL mid-rollout under load; the follower
takes over within 5 s at the same step and weights, finishes the rollout, no request
fails, the audit log records the takeover, and the notices the dead leader could not
deliver (its receiver was down) arrive from the new leader, in order, with their
idempotency keys."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from click.testing import CliRunner

from tests.rollout_helpers import EXAMPLES, FINISHED, policy, wait_for
from tests.webhook_receiver import Receivers
from triton_slots.loadgen import LoadGenerator
from triton_slots.procs import pid_alive
from turnout import stack
from turnout.cli import main as cli
from turnout.client import ApiClient
from turnout.errors import ApiError
from turnout.proxy import route_weights
from turnout.workflow import registry_for

pytestmark = pytest.mark.integration

STEPS = """
      - {weight: 10, bake: 1s}
      - {weight: 40, bake: 8s}
      - {weight: 100, bake: 1s}"""


@pytest.fixture(scope="module")
def receivers():
    made = Receivers()
    yield made
    made.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    directory = tmp_path_factory.mktemp("replicas")
    info = stack.up(directory, replicas=2, progress=print)
    try:
        registry_for(directory).push(EXAMPLES / "v2", name="classifier", version="v2")
        yield info
    finally:
        stack.down(directory)


def _client(replica: dict, info: stack.StackInfo) -> ApiClient:
    return ApiClient(replica["api_url"], info.token, actor="pytest", timeout=5)


def test_both_replicas_serve_and_a_push_counts_every_proxy(replicas):
    info = replicas
    statuses = {r["name"]: _client(r, info).status() for r in info.replicas}
    assert [s["replica"]["leading"] for s in statuses.values()].count(True) == 1
    for i, replica in enumerate(info.replicas):  # each Envoy on its own replica
        assert [p["node"] for p in statuses[replica["name"]]["xds"]["proxies"]] == \
            [f"envoy-{i}"]
    leader = next(r for r in info.replicas if statuses[r["name"]]["replica"]["leading"])
    follower = next(r for r in info.replicas if r is not leader)
    pushed = _client(leader, info).set_traffic(green=0)
    push = pushed["push"]
    assert push["converged"] and push["acked"] == 2, push  # both Envoys counted
    shown = CliRunner().invoke(cli, ["status", "--dir", str(info.directory)])
    assert shown.exit_code == 0, shown.output
    first = info.replicas[0]["name"]
    role = "LEADER" if statuses[first]["replica"]["leading"] else "follower"
    assert re.search(rf"replica  {first} \({role}(, epoch \d+)?\) on postgresql://",
                     shown.output), shown.output
    assert "1/1 proxies in sync" in shown.output
    # A follower refuses to act (one leader runs rollouts) and says where the leader is.
    with pytest.raises(ApiError, match="not the leader") as refused:
        _client(follower, info).set_traffic(green=10)
    assert leader["api_url"] in str(refused.value)
    # The registry is the database the replicas share: v2 was pushed there, not into the
    # stack's directory, and each replica unpacks what it needs into its own cache.
    from triton_slots.registry import LocalRegistry
    from triton_slots.registry.postgresql import PostgresRegistry
    assert isinstance(registry_for(info.directory_path), PostgresRegistry)
    assert [r.ref for r in LocalRegistry(info.directory_path / "registry").list()] == \
        ["classifier:v1"]  # seeded before the database existed; no replica reads it
    assert [r.ref for r in registry_for(info.directory_path).list()] == \
        ["classifier:v1", "classifier:v2"]


def test_leader_killed_mid_rollout_follower_takes_over_and_finishes(replicas, receivers):
    info = replicas
    statuses = {r["name"]: _client(r, info).status() for r in info.replicas}
    leader = next(r for r in info.replicas if statuses[r["name"]]["replica"]["leading"])
    follower = next(r for r in info.replicas if r is not leader)
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=150).start()
    try:
        client = _client(leader, info)
        hook = f"\n  notifications: [{{url: '{receivers.url('flaky')}'}}]\n"
        client.apply(policy("classifier:v2", name="failover", steps=STEPS) + hook,
                     "failover.yaml")
        before = wait_for(client, lambda r: r["phase"] == "baking" and r["step"] == 1,
                          what="step 2")
        for replica in info.replicas:  # both Envoys hold the step's weights
            assert route_weights(replica["envoy_admin"]) == {"blue": 60, "green": 40}
        pid = stack.StackInfo.load(info.directory_path).processes[leader["process"]]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        receivers.accepting = True  # the dead leader's notices were never delivered
        survivor = _client(follower, info)
        while not survivor.status()["replica"]["leading"]:
            assert time.monotonic() - killed < 5.0, "no new leader within 5 s"
            time.sleep(0.05)
        took = time.monotonic() - killed
        assert not pid_alive(pid)
        after = survivor.rollout()
        assert (after["id"], after["step"], after["target_weight"]) == \
            (before["id"], 1, 40), after
        assert after["step_entered_at"] == before["step_entered_at"]
        assert survivor.status()["weights"] == {"blue": 60, "green": 40}
        done = wait_for(survivor, lambda r: r["phase"] in FINISHED, what="completion")
        assert done["phase"] == "promoted", done["reason"]
        # The dead leader's Envoy moved to the survivor and follows it.
        deadline = time.monotonic() + 10
        while "envoy-0" not in [p["node"] for p in survivor.status()["xds"]["proxies"]] or \
                "envoy-1" not in [p["node"] for p in survivor.status()["xds"]["proxies"]]:
            assert time.monotonic() < deadline, survivor.status()["xds"]["proxies"]
            time.sleep(0.1)
        for replica in info.replicas:
            assert route_weights(replica["envoy_admin"]) == {"blue": 0, "green": 100}
    finally:
        stats = load.stop()
    assert stats.failed == 0, stats.errors
    assert stats.ok > 500
    entries = survivor.history(rollout=None)
    takeover = [e for e in entries if e["kind"] == "leader"
                and e["actor"] == f"replica:{follower['name']}"]
    assert takeover and f"took over from {leader['name']}" in takeover[-1]["message"]
    assert any(e["kind"] == "resume" and e["rollout"] == before["id"] for e in entries)
    print(f"failover: new leader {took:.2f} s after SIGKILL")
    # Every notice, once each after dropping repeats by key, in the order it was decided.
    kinds = ["started", "step_entered", "step_entered", "step_entered", "promoted"]
    deadline = time.monotonic() + 20
    while len({h["Idempotency-Key"] for h, _ in receivers.flaky}) < len(kinds):
        assert time.monotonic() < deadline, [json.loads(b)["kind"] for _, b in receivers.flaky]
        time.sleep(0.1)
    seen: dict[str, dict] = {}
    for headers, body in receivers.flaky:
        notice = json.loads(body)
        assert headers["Idempotency-Key"] == notice["id"]
        seen.setdefault(notice["id"], notice)
    assert [n["kind"] for n in seen.values()] == kinds
    assert [n["step"] for n in seen.values()][1:4] == [1, 2, 3]
    assert {n["rollout"] for n in seen.values()} == {before["id"]}
