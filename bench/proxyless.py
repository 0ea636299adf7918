"""Proxyless gRPC vs via Envoy: the same sequential KServe v2 inferences from a client
process of its own, to Triton directly (the baseline, measured in the same run), through
Envoy's ingress, and to ``xds:///turnout`` (gRPC's own xDS client, no proxy hop).
Rounds alternate the three so drift hits them alike; the figure is the median over
rounds of each round's p50 (and p99). ``python -m bench.proxyless``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT_DIR, local_stack, write_json
from xds_server.grpc_bootstrap import write_grpc_bootstrap


def _round(target: str, count: int, env: dict[str, str]) -> dict:
    spec = {"target": target, "model": "classifier", "count": count, "concurrency": 1,
            "warmup": 50}
    done = subprocess.run([sys.executable, "-m", "triton_slots.loadrun", json.dumps(spec)],
                          cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"load to {target} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rounds: int = 10, count: int = 1000) -> dict[str, object]:
    with local_stack() as info:
        bootstrap = write_grpc_bootstrap(Path(info.directory) / "grpc-bench.json",
                                         [f"127.0.0.1:{info.xds_port}"], node_id="bench")
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP=str(bootstrap), GRPC_VERBOSITY="ERROR")
        direct = info.endpoints("blue")[0].grpc_address
        paths = {"direct to Triton (baseline)": direct, "via Envoy": info.ingress,
                 "proxyless xds:///turnout": "xds:///turnout"}
        samples: dict[str, list[dict]] = {name: [] for name in paths}
        for index in range(rounds):
            for name, target in paths.items():
                samples[name].append(_round(target, count, env))
            print(f"  round {index + 1}/{rounds}: " + ", ".join(
                f"{n} p50 {samples[n][-1]['p50_ms']:.3f} ms" for n in paths), flush=True)
    rows = {}
    for name, results in samples.items():
        failed = sum(r["failed"] for r in results)
        rows[name] = {"p50_ms": round(statistics.median(r["p50_ms"] for r in results), 3),
                      "p99_ms": round(statistics.median(r["p99_ms"] for r in results), 3),
                      "requests": sum(r["ok"] + r["failed"] for r in results),
                      "failed": failed}
    base = rows["direct to Triton (baseline)"]["p50_ms"]
    for row in rows.values():
        row["p50_ratio"] = round(row["p50_ms"] / base, 3)
    return {"rounds": rounds, "per_round": count, "paths": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    print(f"written {write_json('proxyless', run(args.rounds, args.count))}")


if __name__ == "__main__":
    main()
