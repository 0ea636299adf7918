"""Data path: the same gRPC load sent directly to one Triton server, through Envoy
(routed by our xDS config) to that same server, and through a minimal static Envoy (the
proxy's own cost on this machine). Rounds alternate the three; each figure is the median
over rounds. Reproduce: ``.venv/bin/python -m bench.datapath``."""

from __future__ import annotations

import argparse
import statistics

from bench.common import local_stack, write_json
from bench.load import run_load
from bench.minimal_envoy import minimal_envoy


def run(*, concurrencies: tuple[int, ...], batches: tuple[int, ...], duration: float,
        rounds: int) -> dict[str, object]:
    cells = []
    with local_stack() as info, minimal_envoy(info.endpoints("blue")[0]) as minimal:
        direct = info.endpoints("blue")[0].grpc_address  # weights: blue 100 %
        paths = (("direct", direct), ("envoy", info.ingress), ("minimal_envoy", minimal))
        for batch in batches:
            for concurrency in concurrencies:
                samples: dict[str, list[dict]] = {name: [] for name, _ in paths}
                for _ in range(rounds):
                    for path, address in paths:
                        result = run_load(address, concurrency=concurrency, batch=batch,
                                          duration=duration)
                        samples[path].append(result.summary())
                cell = {"batch": batch, "concurrency": concurrency}
                for path, runs in samples.items():
                    cell[path] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                cell["p50_added_ms"] = round(cell["envoy"]["p50_ms"] - cell["direct"]["p50_ms"],
                                             3)
                cell["throughput_ratio"] = round(
                    cell["envoy"]["throughput_rps"] / cell["direct"]["throughput_rps"], 3)
                cell["minimal_p50_added_ms"] = round(
                    cell["minimal_envoy"]["p50_ms"] - cell["direct"]["p50_ms"], 3)
                cell["minimal_throughput_ratio"] = round(
                    cell["minimal_envoy"]["throughput_rps"] / cell["direct"]["throughput_rps"],
                    3)
                print(f"  batch {batch} c{concurrency}: direct p50 "
                      f"{cell['direct']['p50_ms']:.3f} ms {cell['direct']['throughput_rps']:.0f}"
                      f" rps | envoy p50 {cell['envoy']['p50_ms']:.3f} ms "
                      f"{cell['envoy']['throughput_rps']:.0f} rps | +{cell['p50_added_ms']} ms, "
                      f"{cell['throughput_ratio']}x", flush=True)
                cells.append(cell)
    return {"duration_s": duration, "rounds": rounds, "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = run(concurrencies=(1, 8, 32), batches=(1, 8), duration=args.duration,
                 rounds=args.rounds)
    print(f"written {write_json('datapath', result)}")


if __name__ == "__main__":
    main()
