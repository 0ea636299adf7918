"""Time to rollback: a version whose latency jumps by 30 ms at a known instant (the
benchmark creates the model's fault flag file), rolled out and baking at 10 % under load,
with gates on Prometheus and on Envoy's access-log stream (then with Prometheus stopped),
side by side in one run.
Measured from that instant to the first failing gate measurement, to the rollback
decision, and to 0 % ACKed by every Envoy. Each trial is classified: ``detected`` (rolled
back after the fault), ``false_positive`` (rolled back before the fault: never counted as
a fast rollback), ``missed`` (not rolled back). Times are reported for detected trials
only; "met" needs every trial detected. Reproduce:
``.venv/bin/python -m bench.rollback_time --trials 10``."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import local_stack, write_json
from bench.policies import ERROR_RATE, FINISHED, P99, policy
from bench.switching import wait_finished
from triton_slots.loadgen import LoadGenerator
from triton_slots.procs import pid_alive, stop_pid
from turnout.client import ApiClient
from turnout.workflow import registry_for

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"


def flagged_model(workdir: Path, flag: Path) -> Path:
    model = workdir / "classifier-flag"
    shutil.copytree(MODELS / "v2", model)
    with open(model / "config.pbtxt", "a") as config:
        config.write(f"""
parameters [
  {{ key: "fault_delay_ms" value: {{ string_value: "30" }} }},
  {{ key: "fault_flag_file" value: {{ string_value: "{flag}" }} }}
]
""")
    return model


#: The configurations compared in one run, in order (Prometheus is stopped before the
#: last): gates on Prometheus (Envoy stats flushed every 1 s, scraped every 1 s) and gates on
#: Envoy's access-log stream (flushed every 100 ms to the control plane).
CONFIGS = (
    {"name": "prometheus", "source": "prometheus", "prometheus": "running",
     "interval": "1s", "window": "4s"},
    {"name": "envoy stream", "source": "envoy", "prometheus": "running",
     "interval": "200ms", "window": "600ms"},
    {"name": "envoy stream, Prometheus stopped", "source": "envoy", "prometheus": "stopped",
     "interval": "200ms", "window": "600ms"},
)


def metrics_for(source: str) -> str:
    """The gates of each configuration: error rate and a latency gate. The stream uses the
    median (robust to one slow request in a sub-second window), Prometheus the p99."""
    if source == "envoy":
        return ("\n      - {name: error-rate, builtin: error_rate, max: 0.01, source: envoy}"
                "\n      - {name: p50-latency, builtin: p50_latency_ms, maxRatio: 3, "
                "minDelta: 10, source: envoy}")
    return ERROR_RATE + P99


def run(trials: int, interval: str = "1s", configs: tuple[dict, ...] = CONFIGS
        ) -> dict[str, object]:
    """``trials`` per configuration, all in one stack and one run."""
    results = []
    with local_stack() as info, tempfile.TemporaryDirectory() as tmp:
        flag = Path(tmp) / "fault-on"
        model = flagged_model(Path(tmp), flag)
        registry = registry_for(info.directory_path)
        client = ApiClient(info.api_url, info.token, actor="bench")
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=200).start()
        version = 0
        try:
            for config in configs:
                if config["prometheus"] == "stopped" and pid_alive(info.processes["prometheus"]):
                    stop_pid(info.processes["prometheus"])
                    print("  prometheus stopped", flush=True)
                rows = []
                print(f"== {config['name']}", flush=True)
                for trial in range(trials):
                    version += 1
                    registry.push(model, name="classifier", version=f"flag-{version}")
                    started = client.apply(policy(
                        f"classifier:flag-{version}", name=f"fault-{version}",
                        steps=[(10, "600s"), (100, "1s")], interval=config["interval"],
                        window=config["window"], metrics=metrics_for(config["source"]),
                        consecutive_error_limit=1000), "bench")
                    while client.rollout()["phase"] not in ("baking", *FINISHED):
                        time.sleep(0.05)
                    time.sleep(5)  # healthy baking first: rounds pass at 10 %
                    fault_at = time.time()
                    flag.touch()
                    done = wait_finished(client, started["id"])
                    flag.unlink()
                    row = classify(done, client.history(rollout=done["id"]), fault_at)
                    print(f"  trial {trial + 1}: {row}", flush=True)
                    rows.append(row)
                results.append(summarise(config, rows))
        finally:
            stats = load.stop()
    return {"configs": results, "scrape_interval_s": 1.0, "envoy_stats_flush_s": 1.0,
            "access_log_flush_s": 0.1, "failure_limit": 1,
            "load": {"sent": stats.sent, "failed": stats.failed}}


def summarise(config: dict, rows: list[dict]) -> dict[str, object]:
    detected = [r for r in rows if r["outcome"] == "detected"]

    def stat(key: str, fn) -> float | None:  # type: ignore[no-untyped-def]
        values = sorted(r[key] for r in detected if r.get(key) is not None)
        return round(fn(values), 3) if values else None

    return {
        **config, "trials": rows, "detected": len(detected),
        "false_positives": sum(1 for r in rows if r["outcome"] == "false_positive"),
        "missed": sum(1 for r in rows if r["outcome"] == "missed"),
        "median_to_first_failing_s": stat("to_first_failing_s", statistics.median),
        "median_to_decision_s": stat("to_decision_s", statistics.median),
        "median_to_zero_acked_s": stat("to_zero_acked_s", statistics.median),
        "max_to_zero_acked_s": stat("to_zero_acked_s", max),
    }


def classify(done: dict, history: list[dict], fault_at: float) -> dict[str, object]:
    """One trial's outcome and times. A rollback decided before the fault is a false
    positive; a rollout that did not roll back missed the fault."""
    decided = done.get("rollback_decided_at")
    row: dict[str, object] = {"phase": done["phase"]}
    if done["phase"] != "rolled_back" or decided is None:
        return {**row, "outcome": "missed"}
    if decided < fault_at:
        return {**row, "outcome": "false_positive",
                "decided_before_fault_s": round(fault_at - decided, 3)}
    failing = [e["at"] for e in history if e["kind"] == "gates"
               and e["evidence"]["phase"] == "Failed" and e["at"] >= fault_at]
    return {**row, "outcome": "detected",
            "to_first_failing_s": round(min(failing) - fault_at, 3) if failing else None,
            "to_decision_s": round(decided - fault_at, 3),
            "to_zero_acked_s": round(done["rollback_acked_at"] - fault_at, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10, help="per configuration")
    args = parser.parse_args()
    print(f"written {write_json('rollback_time', run(args.trials))}")


if __name__ == "__main__":
    main()
