"""``make bench``: every benchmark in turn, then BENCHMARKS.md."""

from __future__ import annotations

import argparse

from bench import convergence, datapath, fleet, gates_sim, report, rollback_time, switching
from bench.common import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None,
                        help="datapath switching convergence fleet rollback_time gates_sim")
    args = parser.parse_args()
    chosen = set(args.only or ["datapath", "switching", "convergence", "fleet",
                               "rollback_time", "gates_sim"])
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
        print("== fleet (simulated streams)", flush=True)
        write_json("fleet", {"runs": [fleet.run(n, 10) for n in (100, 1000, 10000)]})
    if "rollback_time" in chosen:
        print("== time to rollback", flush=True)
        write_json("rollback_time", rollback_time.run(10))
    if "gates_sim" in chosen:
        print("== gates on simulated traffic", flush=True)
        write_json("gates_sim", gates_sim.run(200))
    print(f"written {report.write()}")


if __name__ == "__main__":
    main()
