"""Faults under load with the real stack (two Triton servers per slot, Envoy, Prometheus,
the control plane as its own process): servers killed with SIGKILL lose no request, a
dead candidate ends rolled back within seconds, a planned Envoy restart (hot restart)
loses no request, and a stopped proxy does not wedge a rollout under a quorum policy."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.policies import ERROR_RATE
from bench.policies import policy as rollout_policy
from tests.rollout_helpers import FINISHED, envoy_weights, wait_for
from triton_slots.loadgen import LoadGenerator
from triton_slots.procs import pid_alive, processes_naming
from turnout import stack
from turnout.cli import main as cli
from turnout.client import ApiClient
from turnout.proxy import SHARED_MEMORY, EnvoyProxy, read_base_id, server_info

pytestmark = pytest.mark.integration


def policy(name: str, model: str, *, bake: str = "60s", extra: str = "") -> str:
    """No validation, 10 % baking for ``bake``, an error-rate gate."""
    return rollout_policy(model, name=name, steps=[(10, bake), (100, "1s")], checks="[]",
                          metrics=ERROR_RATE, consecutive_error_limit=4, deadline="5m",
                          extra=extra)


def _kill(info: stack.StackInfo, name: str) -> None:
    os.kill(info.processes[name], signal.SIGKILL)


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults")
    info = stack.up(directory, per_slot=2, progress=print)
    try:
        from tests.rollout_helpers import EXAMPLES
        from turnout.workflow import registry_for

        registry_for(directory).push(EXAMPLES / "v2", name="classifier", version="v2")
        yield info, ApiClient(info.api_url, info.token, actor="pytest")
    finally:
        base_id = read_base_id(directory / "envoy-envoy-0.base-id")
        stack.down(directory)
    time.sleep(0.5)
    # Hot restart's shared memory region goes with the stack.
    assert base_id is not None and \
        not (SHARED_MEMORY / f"envoy_shared_memory_{base_id * 10}").exists()
    # Servers killed outright leave their Python backend stubs behind unless the stack
    # stops their whole process group: nothing naming this stack may be left running.
    assert not processes_naming(directory), "processes of the stack survived stack down"


def test_killing_one_server_at_50_50_loses_no_request(pools):
    info, client = pools
    client.set_traffic(green=50)
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4).start()
    time.sleep(2)
    _kill(info, "triton-blue-0")
    time.sleep(4)
    stats = load.stop()
    client.set_traffic(green=0)
    print(f"one server killed at 50/50: {stats.sent} sent, {stats.failed} failed")
    assert stats.sent > 1000 and stats.failed == 0, dict(stats.errors)
    ready = {e["endpoint"]: e["ready"] for e in client.status()["slots"]["blue"]}
    assert sorted(ready.values()) == [False, True]  # the dead one is out, the other serves


def test_candidate_slot_death_mid_bake_rolls_back_with_no_failed_request(pools):
    info, client = pools
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4).start()
    try:
        client.apply(policy("doomed", "classifier:v2"), "doomed.yaml")
        wait_for(client, lambda r: r["phase"] == "baking", what="baking at 10%")
        time.sleep(1.5)
        killed_at = time.time()
        _kill(info, "triton-green-0")
        _kill(info, "triton-green-1")
        done = wait_for(client, lambda r: r["phase"] in FINISHED, timeout=30, what="rollback")
        stats = load.stop()
    finally:
        load.stop()
    took = done["rollback_acked_at"] - killed_at
    print(f"candidate slot killed at 10%: {stats.sent} sent, {stats.failed} failed; "
          f"rolled back {took:.2f}s after the kill")
    assert done["phase"] == "rolled_back", done["reason"]
    assert "candidate slot green unhealthy" in done["reason"] or \
        "0% on classifier:v2" in done["reason"]
    assert took < 5.0
    assert stats.failed == 0, dict(stats.errors)
    assert envoy_weights(info) == {"blue": 100, "green": 0}
    history = [e["message"] for e in client.history(rollout=done["id"])]
    assert any("candidate slot green unhealthy: 0/2 servers ready" in m for m in history)


def test_a_planned_envoy_restart_loses_no_request(pools):
    info, _client = pools
    directory = Path(info.directory)
    runner = CliRunner()
    refused = runner.invoke(cli, ["stack", "restart-envoy", "--dir", str(directory),
                                  "--node", "envoy-9"])
    assert refused.exit_code == 1
    assert "no Envoy 'envoy-9' in this stack (it has envoy-0)" in refused.output
    before = stack.StackInfo.load(directory).processes["envoy envoy-0"]
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=200).start()
    try:
        time.sleep(1)
        shown = runner.invoke(cli, ["stack", "restart-envoy", "--dir", str(directory),
                                    "--parent-shutdown", "3"])
        time.sleep(1)
    finally:
        stats = load.stop()
    assert shown.exit_code == 0, shown.output
    after = stack.StackInfo.load(directory).processes["envoy envoy-0"]
    assert f"envoy-0: pid {before} -> {after}" in shown.output
    assert not pid_alive(before) and pid_alive(after)
    assert server_info(info.envoy_admin)["command_line_options"]["restart_epoch"] == 1
    assert envoy_weights(info) == {"blue": 100, "green": 0}
    print(f"hot restart under load: {stats.sent} sent, {stats.failed} failed")
    assert stats.sent > 300 and stats.failed == 0, dict(stats.errors)


@pytest.fixture(scope="module")
def two_envoys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    info = stack.up(directory, progress=print)
    second = None
    try:
        from tests.rollout_helpers import EXAMPLES
        from turnout.workflow import registry_for

        registry_for(directory).push(EXAMPLES / "v2", name="classifier", version="v2")
        # The clients connect before the second proxy exists: both proxies bind the same
        # listener port (SO_REUSEPORT), and a connection the kernel handed to the frozen
        # one would hang. A real sidecar's clients are its own.
        load = LoadGenerator(info.ingress, model="classifier", concurrency=2, rate=100).start()
        time.sleep(1)
        second = EnvoyProxy.start(node_id="sidecar-payments", node_cluster="payments",
                                  xds_host="127.0.0.1", xds_port=info.xds_port,
                                  work_dir=directory, log_dir=directory / "logs")
        second.wait_ready()
        yield info, ApiClient(info.api_url, info.token, actor="pytest"), second, load
    finally:
        if second is not None:
            os.kill(second.process.pid, signal.SIGCONT)
            second.stop()
        stack.down(directory)


def test_a_foreign_node_cluster_is_served_and_a_stopped_proxy_does_not_wedge(two_envoys):
    _info, client, second, load = two_envoys
    proxies = {p["node"]: p for p in client.status()["xds"]["proxies"]}
    assert set(proxies) == {"envoy-0", "sidecar-payments"}
    assert proxies["sidecar-payments"]["claimed_group"] == "payments"
    assert all(p["in_sync"] for p in proxies.values())
    with urllib.request.urlopen(second.admin_url + "/config_dump?resource=dynamic_route_configs",
                                timeout=2) as response:
        assert b"ingress_routes" in response.read()  # it got the configuration
    try:
        os.kill(second.process.pid, signal.SIGSTOP)
        client.apply(policy("quorum", "classifier:v2", bake="2s",
                            extra="\n  convergence: {minAcked: 99%, timeout: 2s}"), "q.yaml")
        done = wait_for(client, lambda r: r["phase"] in FINISHED, timeout=90, what="promotion")
        assert done["phase"] == "promoted", done["reason"]
        status = client.status()
        assert "sidecar-payments" in status["last_push"]["stragglers"]
        behind = {p["node"]: p["in_sync"] for p in status["xds"]["proxies"]}
        assert behind == {"envoy-0": True, "sidecar-payments": False}
        os.kill(second.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(p["in_sync"] for p in client.status()["xds"]["proxies"]):
                break
            time.sleep(0.2)
        assert all(p["in_sync"] for p in client.status()["xds"]["proxies"])
    finally:
        os.kill(second.process.pid, signal.SIGCONT)
        stats = load.stop()
    assert stats.failed == 0, dict(stats.errors)
