"""Time to rollback: a version whose latency jumps by 30 ms at a known instant (the
benchmark creates the model's fault flag file), rolled out and baking at 10 % under load.
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
from bench.policies import policy
from bench.switching import wait_finished
from triton_slots.loadgen import LoadGenerator
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


def run(trials: int, interval: str) -> dict[str, object]:
    rows = []
    with local_stack() as info, tempfile.TemporaryDirectory() as tmp:
        flag = Path(tmp) / "fault-on"
        model = flagged_model(Path(tmp), flag)
        registry = registry_for(info.directory_path)
        client = ApiClient(info.api_url, info.token, actor="bench")
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=200).start()
        try:
            for trial in range(trials):
                registry.push(model, name="classifier", version=f"flag-{trial}")
                started = client.apply(policy(
                    f"classifier:flag-{trial}", name=f"fault-{trial}",
                    steps=[(10, "600s"), (100, "1s")], interval=interval), "bench")
                while client.rollout()["phase"] != "baking":
                    time.sleep(0.1)
                time.sleep(5)  # healthy baking first: rounds pass at 10 %
                fault_at = time.time()
                flag.touch()
                done = wait_finished(client, started["id"])
                flag.unlink()
                row = classify(done, client.history(rollout=done["id"]), fault_at)
                print(f"  trial {trial + 1}: {row}", flush=True)
                rows.append(row)
                # The next trial starts from the same side: the stable slot kept 100 %.
        finally:
            stats = load.stop()
    seconds = float(interval.rstrip("s"))
    detected = [r for r in rows if r["outcome"] == "detected"]
    return {
        "trials": rows, "gate_interval_s": seconds, "scrape_interval_s": 1.0,
        "envoy_stats_flush_s": 1.0, "failure_limit": 1,
        "detected": len(detected),
        "false_positives": sum(1 for r in rows if r["outcome"] == "false_positive"),
        "missed": sum(1 for r in rows if r["outcome"] == "missed"),
        "median_to_zero_acked_s": statistics.median(r["to_zero_acked_s"] for r in detected)
        if detected else None,
        "load": {"sent": stats.sent, "failed": stats.failed},
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
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    print(f"written {write_json('rollback_time', run(args.trials, args.interval))}")


if __name__ == "__main__":
    main()
