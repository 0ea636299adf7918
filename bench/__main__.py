"""``make bench``: every benchmark in turn, then BENCHMARKS.md."""

from __future__ import annotations

import argparse

from bench import (
    convergence,
    datapath,
    delivery,
    failover,
    fleet,
    gates_sim,
    proxyless,
    report,
    rollback_time,
    shadow,
    stream_move,
    streams,
    switching,
)
from bench.common import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None,
                        help="datapath switching convergence fleet proxyless failover "
                             "rollback_time gates_sim delivery streams stream_move shadow")
    args = parser.parse_args()
    chosen = set(args.only or ["datapath", "switching", "convergence", "fleet", "proxyless",
                               "failover", "rollback_time", "gates_sim", "delivery",
                               "streams", "stream_move", "shadow"])
    if "datapath" in chosen:
        print("== data path", flush=True)
        write_json("datapath", datapath.run(concurrencies=(1, 8, 32), batches=(1, 8),
                                            duration=4.0, rounds=2))
    if "switching" in chosen:
        print("== switching", flush=True)
        write_json("switching", switching.run(3, 300.0))
    if "convergence" in chosen:
        print("== convergence (one Envoy)", flush=True)
        write_json("convergence", convergence.run(200))
    if "fleet" in chosen:
        print("== fleet (simulated sidecars)", flush=True)
        write_json("fleet", {"runs": fleet.matrix([1000, 10000], [1, 2], ["sotw", "delta"])})
    if "proxyless" in chosen:
        print("== proxyless gRPC vs via Envoy", flush=True)
        write_json("proxyless", proxyless.run(10))
    if "failover" in chosen:
        print("== leader failover", flush=True)
        write_json("failover", failover.run(10))
    if "rollback_time" in chosen:
        print("== time to rollback", flush=True)
        write_json("rollback_time", rollback_time.run(10))
    if "gates_sim" in chosen:
        print("== gates on simulated traffic", flush=True)
        write_json("gates_sim", gates_sim.run(200))
    if "delivery" in chosen:
        print("== deploy over the repository API", flush=True)
        write_json("delivery", delivery.run(3))
    if "streams" in chosen:
        print("== streaming models: Envoy's cost, time to rollback on TTFT", flush=True)
        write_json("streams", streams.run(10, 300))
    if "stream_move" in chosen:
        print("== long-lived streams after a promotion and a rollback", flush=True)
        write_json("stream_move", stream_move.run(10.0, 16, 3))
    if "shadow" in chosen:
        print("== shadow traffic: cost, extra load, false positives", flush=True)
        write_json("shadow", {**shadow.cost(6, 8.0), "simulated": shadow.simulated()})
    print(f"written {report.write()}")


if __name__ == "__main__":
    main()
