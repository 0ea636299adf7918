"""``make demo``: the local stack, live inference through Envoy, and the split walked
0 -> 10 -> 50 -> 100 -> 0 % green, with per-step request counts per slot and failures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from triton_slots.metrics import requests_served
from turnout import stack
from turnout.client import ApiClient
from turnout.loadgen import LoadGenerator

STEPS = (0, 10, 50, 100, 0)


def _served(info: stack.StackInfo) -> dict[str, int]:
    return {slot: requests_served(info.endpoints(slot)) for slot in ("blue", "green")}


def walk(info: stack.StackInfo, *, steps: tuple[int, ...], hold_s: float, clients: int) -> int:
    """Move the split through ``steps`` under load; print a table; return failures."""
    api = ApiClient(info.api_url, info.token)
    load = LoadGenerator(info.ingress, concurrency=clients).start()
    print(f"\nload: {clients} gRPC clients -> Envoy {info.ingress}; {hold_s:.0f}s per step\n")
    print(f"{'green %':>8} {'ACK ms':>8} {'blue reqs':>10} {'green reqs':>11} "
          f"{'green share':>12} {'failed':>7}")
    total_failed = 0
    try:
        for green in steps:
            before, (_, failed0) = _served(info), load.counts()
            push = api.set_traffic(green=green)["push"]
            time.sleep(hold_s)
            after, (_, failed1) = _served(info), load.counts()
            blue_n, green_n = after["blue"] - before["blue"], after["green"] - before["green"]
            share = green_n / max(1, blue_n + green_n) * 100
            failed = failed1 - failed0
            total_failed += failed
            print(f"{green:>8} {push['seconds'] * 1e3:>8.1f} {blue_n:>10} {green_n:>11} "
                  f"{share:>11.1f}% {failed:>7}", flush=True)
    finally:
        stats = load.stop()
    print(f"\nrequests sent {stats.sent}, ok {stats.ok}, failed {stats.failed}"
          + (f" {dict(stats.errors)}" if stats.failed else ""))
    return max(total_failed, stats.failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".turnout-demo"))
    parser.add_argument("--hold", type=float, default=3.0, help="seconds per step")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    print(f"== starting the local stack in {args.dir} (logs in {args.dir}/logs)")
    info = stack.up(args.dir, progress=print)
    try:
        failed = walk(info, steps=STEPS, hold_s=args.hold, clients=args.clients)
    finally:
        print("== stopping the local stack")
        stack.down(args.dir)
    if failed:
        print(f"FAILED: {failed} requests failed", file=sys.stderr)
        return 1
    print("zero failed requests across every switch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
