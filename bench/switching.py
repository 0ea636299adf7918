"""Zero-downtime switching: sustained gRPC load through Envoy (separate processes) during
full rollouts (every step, promotion), rollbacks after promotion, and a gate-driven
rollback, several times over. Requests are classed as "during a switch" when they start
within [-0.5 s, +1.0 s] of a weight push recorded in the audit log.
Reproduce: ``.venv/bin/python -m bench.switching``."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from bench.common import local_stack, percentile, write_json
from bench.load import LoadResult, run_load
from bench.policies import FINISHED, policy
from turnout.client import ApiClient
from turnout.workflow import registry_for

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"
STEPS = [(10, "2s"), (25, "2s"), (50, "2s"), (100, "2s")]


def wait_finished(client: ApiClient, rollout_id: str, timeout: float = 120.0,
                  skip_phase: str = "") -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = client.rollout()
        if state["id"] == rollout_id and state["phase"] in FINISHED \
                and state["phase"] != skip_phase:
            return state
        time.sleep(0.2)
    raise TimeoutError(f"rollout {rollout_id} did not finish: {state.get('phase')} "
                       f"{state.get('reason')}")


def run(cycles: int, rate: float) -> dict[str, object]:
    with local_stack() as info:
        registry = registry_for(info.directory_path)
        for index in range(cycles):
            registry.push(MODELS / "v2", name="classifier", version=f"v2-{index}")
        registry.push(MODELS / "v3", name="classifier", version="v3")
        client = ApiClient(info.api_url, info.token, actor="bench")
        duration = 8 + cycles * 22 + 16
        holder: dict[str, LoadResult] = {}
        loader = threading.Thread(target=lambda: holder.setdefault("r", run_load(
            info.ingress, concurrency=8, duration=duration, rate=rate)))
        loader.start()
        time.sleep(4)  # steady state first
        outcomes = []
        for index in range(cycles):
            started = client.apply(policy(f"classifier:v2-{index}", name=f"cycle-{index}",
                                          steps=STEPS), "bench")
            outcomes.append(wait_finished(client, started["id"])["phase"])
            time.sleep(1)
            client.command("rollback")
            outcomes.append(wait_finished(client, started["id"], skip_phase="promoted")["phase"])
            time.sleep(1)
        started = client.apply(policy("classifier:v3", name="faulty", steps=STEPS), "bench")
        outcomes.append(wait_finished(client, started["id"])["phase"])
        loader.join()
        result = holder["r"]
        pushes = [e["at"] for e in client.history(limit=10_000) if e["kind"] == "weights"]
    during = [r for r in result.rows if any(-0.5 <= r[0] - p <= 1.0 for p in pushes)]
    steady = [r for r in result.rows if r not in during]
    summary = {
        "cycles": cycles, "outcomes": outcomes, "weight_pushes": len(pushes),
        "duration_s": duration, "rate_rps": rate,
        "sent": len(result.rows), "failed": result.failed, "failed_by_status":
            result.failures(),
        "steady": {"requests": len(steady),
                   "p50_ms": round(percentile(result.latencies(steady), 50), 3),
                   "p99_ms": round(percentile(result.latencies(steady), 99), 3)},
        "during_switches": {"requests": len(during),
                            "p50_ms": round(percentile(result.latencies(during), 50), 3),
                            "p99_ms": round(percentile(result.latencies(during), 99), 3)},
        "loadgen_cpu_cores": round(result.loadgen_cpu_s / duration, 2),
    }
    print(summary, flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300.0)
    args = parser.parse_args()
    print(f"written {write_json('switching', run(args.cycles, args.rate))}")


if __name__ == "__main__":
    main()
