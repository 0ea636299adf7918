"""Shadow traffic (issue 22): what it costs live requests, the extra load it puts on each
slot, and the disagreement gate's false positives on an A/A pair.

1. **Cost**: the example classifier under 200 requests/s of gRPC load (4 threads, open
   loop) through the ingress, in alternating rounds of four phases: Envoy without the tap
   filter (``shadow_tap: false``: the control plane restarted with it, Envoy's listener
   changed), the tap filter present but idle (shadowing off, the default), a tap session
   open on Envoy's admin with nothing copied (what the observer adds), and a rollout's
   shadow step copying 10 % and then 100 % of live requests to green (serving the same
   version: an A/A pair). Per phase: the clients' p50/p99 latency, the requests each slot
   served and the copies Envoy made (its cluster counters), and the shadow comparison's
   figures. Each shadow phase is a real rollout (``{shadow: P, bake: 1h}``, disagreement
   gate ``max: 0.01``), aborted at the end of the phase; a rollback is a false positive.
   A last phase sends green the same 200 requests/s straight to its Triton beside the live
   load, no copy made: the candidate's own work on the machine, without Envoy's mirror.
2. **A/A false positives, simulated**: 100 shadow stages of 500 compared requests each
   between two copies of one float-output model whose outputs jitter like a GPU's (relative
   noise 1e-5), judged by the same gates (fixed ``max: 0.01`` and the sequential test);
   and the detection power when 2 % of the inputs are answered wrongly.

Reproduce: ``.venv/bin/python -m bench.shadow --rounds 6 --seconds 8``; raw JSON in
``bench/out/shadow.json``."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import local_stack, write_json
from gates.metrics.evaluator import measure
from gates.metrics.measurement import Phase
from gates.metrics.sources import ShadowSource
from gates.shadow.compare import ShadowStats
from gates.shadow.exchange import Exchange
from gates.validation.settings import ParitySettings
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.assets import EXAMPLE_MODELS
from turnout.client import ApiClient
from turnout.policy.model import MetricSpec
from turnout.proxy import admin_stats
from turnout.workflow import registry_for

RATE = 200.0
COUNTERS = {"active": "slot_blue", "candidate copies": "slot_green_preview",
            "copies made": "turnout_ingress_self"}


def _policy(version: str, percent: float) -> str:
    return f"""apiVersion: turnout/v1
kind: Rollout
metadata: {{name: shadow-cost-{int(percent)}}}
spec:
  model: classifier:{version}
  validation: {{enabled: false}}
  strategy:
    steps:
      - {{shadow: {percent:g}, bake: 1h}}
      - {{weight: 100}}
  gates:
    interval: 1s
    window: 3s
    minRequests: 20
    metrics:
      - {{name: disagreement, builtin: disagreement_rate, max: 0.01, source: shadow}}
"""


def _counters(admin: str) -> dict[str, int]:
    stats = admin_stats(admin, "cluster.")
    return {label: stats.get(f"cluster.{cluster}.upstream_rq_total", 0)
            for label, cluster in COUNTERS.items()}


def _has_tap(admin: str) -> bool:
    with urllib.request.urlopen(f"{admin.rstrip('/')}/config_dump?resource=dynamic_listeners",
                                timeout=5) as response:
        return "envoy.filters.http.tap" in response.read().decode()


def _set_tap(info: stack.StackInfo, on: bool) -> None:
    """Restart the control plane with or without the tap filter; wait for Envoy to have it
    so (a listener change: connections drain)."""
    path = Path(info.directory) / "controlplane.json"
    config = json.loads(path.read_text())
    if config.get("shadow_tap", True) == on and _has_tap(info.envoy_admin) == on:
        return
    config["shadow_tap"] = on
    path.write_text(json.dumps(config))
    stack.restart_control_plane(Path(info.directory))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _has_tap(info.envoy_admin) == on:
                time.sleep(1.0)
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Envoy never got the listener with the tap filter {on}")


def _phase(info: stack.StackInfo, seconds: float, *, beside: str | None = None
           ) -> dict[str, Any]:
    """Live load for ``seconds``; ``beside``: the same rate sent straight to that Triton
    at the same time (the candidate's own work, without any copy)."""
    before = _counters(info.envoy_admin)
    load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=RATE,
                         keep_latencies=True).start()
    other = LoadGenerator(beside, model="classifier", concurrency=4, rate=RATE).start() \
        if beside else None
    time.sleep(seconds)
    stats = load.stop()
    if other is not None:
        other.stop()
    after = _counters(info.envoy_admin)
    return {"sent": stats.sent, "failed": stats.failed,
            "p50_ms": round(stats.percentile(50), 3), "p99_ms": round(stats.percentile(99), 3),
            "requests": {k: after[k] - before[k] for k in after}}


def _tap_session_phase(info: stack.StackInfo, seconds: float) -> dict[str, Any]:
    """Shadowing off, but a tap session open on Envoy's admin (what a shadow step's
    observer holds): the tap filter then looks at every request."""
    import asyncio
    import threading

    import aiohttp

    from gates.shadow.tap import traces

    opened, stop = threading.Event(), threading.Event()

    async def hold() -> None:
        async with aiohttp.ClientSession() as session:
            reader = traces(session, info.envoy_admin, on_open=opened.set)
            task = asyncio.ensure_future(reader.__anext__())
            while not stop.is_set():
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    thread = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    thread.start()
    if not opened.wait(10):
        raise RuntimeError("the tap session never opened")
    try:
        return _phase(info, seconds)
    finally:
        stop.set()
        thread.join(10)


def _shadow_phase(info: stack.StackInfo, client: ApiClient, percent: float,
                  seconds: float) -> dict[str, Any]:
    started = client.apply(_policy("aa", percent), "bench")
    while client.rollout()["phase"] != "baking":
        if client.rollout()["phase"] in ("rolled_back", "failed", "aborted"):
            raise RuntimeError(f"shadow rollout ended: {client.rollout()['reason']}")
        time.sleep(0.1)
    result = _phase(info, seconds)
    state = client.rollout()
    result["shadow"] = {k: (state.get("shadow") or {}).get(k) for k in (
        "compared", "disagreed", "disagreement_rate", "latency_ratio")}
    result["false_positive"] = state["phase"] != "baking"
    rounds = len(state.get("rounds") or [])
    result["gate_rounds"] = rounds
    if not result["false_positive"]:
        client.command("abort")
    while client.rollout()["phase"] not in ("rolled_back", "aborted", "failed", "promoted"):
        time.sleep(0.1)
    assert client.rollout()["id"] == started["id"]
    return result


def cost(rounds: int, seconds: float) -> dict[str, Any]:
    phases: dict[str, list[dict[str, Any]]] = {
        "no tap": [], "off": [], "tap session": [], "10 %": [], "100 %": [],
        "candidate loaded directly": []}
    with local_stack() as info:
        registry_for(Path(info.directory)).push(EXAMPLE_MODELS / "classifier" / "v1",
                                                name="classifier", version="aa")
        client = ApiClient(info.api_url, info.token, actor="bench")
        for trial in range(rounds):
            print(f"== round {trial + 1}/{rounds}", flush=True)
            # Envoy with and without the tap filter, in alternating order (the phase right
            # after a restart was slower in one order and faster in the other).
            for on in ((False, True) if trial % 2 == 0 else (True, False)):
                _set_tap(info, on)
                phases["off" if on else "no tap"].append(_phase(info, seconds))
            _set_tap(info, True)
            client = ApiClient(info.api_url, info.token, actor="bench")
            phases["tap session"].append(_tap_session_phase(info, seconds))
            phases["10 %"].append(_shadow_phase(info, client, 10, seconds))
            phases["100 %"].append(_shadow_phase(info, client, 100, seconds))
            phases["candidate loaded directly"].append(_phase(
                info, seconds, beside=info.endpoints("green")[0].grpc_address))
            for name, rows in phases.items():
                print(f"  {name}: {json.dumps(rows[-1])}", flush=True)
    summary = {}
    for name, rows in phases.items():
        summary[name] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rows), 3),
            "sent": sum(r["sent"] for r in rows), "failed": sum(r["failed"] for r in rows),
            **{f"{k} per s": round(sum(r["requests"][k] for r in rows) / (seconds * len(rows)),
                                   1) for k in COUNTERS},
        }
        if "shadow" in rows[0]:
            summary[name]["compared"] = sum(r["shadow"]["compared"] or 0 for r in rows)
            summary[name]["disagreed"] = sum(r["shadow"]["disagreed"] or 0 for r in rows)
            summary[name]["false_positives"] = sum(r["false_positive"] for r in rows)
    for name in ("no tap", "tap session", "10 %", "100 %", "candidate loaded directly"):
        for q in ("p50_ms", "p99_ms"):
            summary[name][f"{q[:3]}_vs_off"] = round(summary[name][q] / summary["off"][q], 3)
    return {"rate": RATE, "seconds_per_phase": seconds, "rounds": rounds,
            "summary": summary, "phases": phases}


def _stage(rng: np.random.Generator, pairs: int, wrong_share: float) -> ShadowStats:
    stats, settings = ShadowStats(), ParitySettings()
    for i in range(pairs):
        answer = rng.random(10).astype(np.float32)
        jitter = answer * (1 + rng.normal(0, 1e-5, 10)).astype(np.float32)
        if rng.random() < wrong_share:
            jitter[rng.integers(10)] += 0.5
        live = Exchange("live", str(i), "m", "d", {"Y": answer}, latency_s=0.002)
        copy = Exchange("copy", str(i), "m", "d", {"Y": jitter}, latency_s=0.002)
        stats.record(live, copy, settings)
    return stats


def simulated(stages: int = 100, pairs: int = 500) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    gates = {"fixed max 0.01": MetricSpec("d", builtin="disagreement_rate", max=0.01,
                                          source="shadow"),
             "sequential max 0.01": MetricSpec("d", builtin="disagreement_rate", max=0.01,
                                               source="shadow", sequential=(0.01, 0.05))}
    rows = []
    for case, share in (("A/A (jitter 1e-5)", 0.0), ("2 % of inputs wrong", 0.02)):
        outcomes = {name: 0 for name in gates}
        for _ in range(stages):
            stats = _stage(rng, pairs, share)
            for name, metric in gates.items():
                verdict = measure(ShadowSource(lambda s=stats: s), metric, candidate="green",
                                  active="blue", window_s=3, min_requests=20,
                                  candidate_requests=stats.compared, baselines={})
                outcomes[name] += verdict.phase is Phase.FAILED
        for name, failed in outcomes.items():
            rows.append({"case": case, "gate": name, "stages": stages, "pairs": pairs,
                         "rolled_back": failed})
            print(f"  {case}, {name}: {failed}/{stages} rolled back", flush=True)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print("== A/A false positives and detection, simulated", flush=True)
    sim = simulated()
    print("== cost on live requests", flush=True)
    print(f"written {write_json('shadow', {**cost(args.rounds, args.seconds), 'simulated': sim})}")


if __name__ == "__main__":
    main()
