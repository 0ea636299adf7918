"""Proxyless gRPC: a grpcio/tritonclient process dialling ``xds:///turnout`` with gRPC's
own xDS client, bootstrapped at the control plane, sends KServe v2 inference straight to
the Triton servers and follows the same split, preview routes and switches as Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from triton_slots.routing import PREVIEW_KEY_HEADER, SLOT_HEADER
from xds_server.grpc_bootstrap import write_grpc_bootstrap

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {slot: after[slot] - before[slot] for slot in before}


def _client(live, node_id: str, spec: dict) -> subprocess.Popen:
    bootstrap = write_grpc_bootstrap(
        live.directory / f"grpc-{node_id}.json", [f"127.0.0.1:{live.plane.xds_port}"],
        node_id=node_id)
    env = dict(os.environ, GRPC_XDS_BOOTSTRAP=str(bootstrap), GRPC_VERBOSITY="ERROR")
    spec = {"target": f"xds:///{live.plane.config.grpc_target}", "model": "classifier",
            **spec}
    return subprocess.Popen([sys.executable, "-m", "triton_slots.loadrun", json.dumps(spec)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _result(process: subprocess.Popen, timeout: float = 90) -> dict:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_split_90_10_over_2000_inferences_within_3_points(live):
    assert live.set_green(10).converged
    before = live.served()
    result = _result(_client(live, "grpc-split", {"count": 2000, "concurrency": 4}))
    served = _delta(before, live.served())
    assert result["failed"] == 0, result["errors"]
    assert served["blue"] + served["green"] == 2000  # every inference reached Triton
    assert 7.0 <= served["green"] / 20 <= 13.0, served


@pytest.mark.parametrize("slot", ["blue", "green"])
def test_preview_header_reaches_only_its_slot(live, slot):
    assert live.set_green(0 if slot == "green" else 100).converged
    before = live.served()
    headers = {SLOT_HEADER: slot, PREVIEW_KEY_HEADER: live.plane.preview_key}
    result = _result(_client(live, f"grpc-preview-{slot}", {"count": 200, "headers": headers}))
    assert result["failed"] == 0, result["errors"]
    other = "blue" if slot == "green" else "green"
    assert _delta(before, live.served()) == {slot: 200, other: 0}


def test_preview_header_without_the_key_takes_the_split(live):
    assert live.set_green(0).converged
    before = live.served()
    result = _result(_client(live, "grpc-nokey", {"count": 200,
                                                  "headers": {SLOT_HEADER: "green"}}))
    assert result["failed"] == 0, result["errors"]
    assert _delta(before, live.served()) == {"blue": 200, "green": 0}


def test_switching_under_load_loses_nothing_and_the_client_counts_in_convergence(live):
    assert live.set_green(0).converged
    stop = live.directory / "stop-proxyless"
    stop.unlink(missing_ok=True)
    before = live.served()
    client = _client(live, "grpc-load", {"until": str(stop), "concurrency": 4})
    try:
        deadline = time.monotonic() + 30
        while not any(p["node"] == "grpc-load" and p["in_sync"] for p in
                      live.plane.cache.status(live.plane.config.group)["proxies"]):
            assert time.monotonic() < deadline, "the gRPC client never got its config"
            time.sleep(0.1)
        time.sleep(0.5)
        for green in (10, 50, 100, 50, 0):
            result = live.set_green(green)
            assert result.converged, result
            assert sorted(o.node_id for o in result.outcomes) == ["envoy-test", "grpc-load"]
            time.sleep(0.4)
    finally:
        stop.touch()
    stats = _result(client)
    served = _delta(before, live.served())
    assert stats["failed"] == 0, stats["errors"]
    assert stats["ok"] > 300
    assert served["blue"] > 0 and served["green"] > 0
    assert served["blue"] + served["green"] == stats["ok"]


def test_envoy_never_receives_the_api_listener(live):
    names = json.loads(_admin(live, "/config_dump?resource=dynamic_listeners"))
    listed = [entry["name"] for entry in names["configs"]]
    assert live.plane.config.grpc_target not in listed
    assert "ingress" in listed
    # Not sent and rejected either: a listener Envoy refused would not be listed above.
    assert live.envoy.stats("listener_manager.lds")["listener_manager.lds.update_rejected"] == 0
    assert live.envoy.stats("listener_manager.lds")["listener_manager.lds.update_success"] >= 1


def _admin(live, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(live.envoy.admin_url + path, timeout=5) as response:
        return response.read().decode()
