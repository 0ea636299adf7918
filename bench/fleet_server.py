"""An ADS server process for the fleet benchmark: waits for N simulated streams, then
times K weight pushes (publish -> last ACK) and reports CPU time and memory per stream.
``python -m bench.fleet_server PORT_FILE N K OUT``"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

import grpc

from triton_slots.slot import Endpoint, Slot
from turnout.topology import build_snapshot
from turnout.weights import Weights
from xds_server import AdsServer, SnapshotCache
from xds_server.server import tune_gc

GROUP = "turnout"
_BLUE = Endpoint("127.0.0.1", 1001, 1002, 1003)
_GREEN = Endpoint("127.0.0.1", 2001, 2002, 2003)


def snapshot(green: int):  # type: ignore[no-untyped-def]
    """The production topology's snapshot, with fixed endpoints (nothing is dialled)."""
    return build_snapshot(ingress_host="127.0.0.1", ingress_port=8080,
                          slots={"blue": Slot("blue", (_BLUE,)), "green": Slot("green", (_GREEN,))},
                          health={_BLUE: True, _GREEN: True}, weights=Weights.with_green(green))


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(port_file: str, streams: int, pushes: int, out: str) -> None:
    cache = SnapshotCache()
    ads = AdsServer(cache)
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000)])
    server.add_generic_rpc_handlers((ads.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cache.set_snapshot(GROUP, snapshot(0))
    tune_gc()
    rss0, cpu0 = rss_mib(), cpu_s()
    with open(port_file, "w") as handle:
        handle.write(str(port))
    started = time.monotonic()
    last_report = started
    while True:  # every stream connected and in sync with the first snapshot
        status = cache.status(GROUP)
        in_sync = sum(1 for p in status["proxies"] if p["in_sync"])
        if in_sync >= streams:
            break
        if time.monotonic() - last_report > 5:
            last_report = time.monotonic()
            print(f"  {len(status['proxies'])} streams connected, {in_sync} in sync",
                  file=sys.stderr, flush=True)
        if time.monotonic() - started > 600:
            raise SystemExit(f"only {len(status['proxies'])} streams after 600 s")
        await asyncio.sleep(0.2)
    connect_s = time.monotonic() - started
    rss1, cpu1 = rss_mib(), cpu_s()
    results = []
    profiler = None
    if os.environ.get("TURNOUT_PROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for index in range(pushes):
        result = await cache.publish_and_wait(GROUP, snapshot(1 + index % 99), timeout=120)
        acked = sum(1 for o in result.outcomes if o.outcome == "acked")
        results.append({"seconds": result.seconds, "acked": acked})
    cpu2 = cpu_s()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["TURNOUT_PROFILE"])
    await server.stop(grace=None)
    with open(out, "w") as handle:
        json.dump({
            "streams": streams, "connect_s": connect_s, "pushes": results,
            "rss_before_mib": rss0, "rss_connected_mib": rss1,
            "cpu_connect_s": cpu1 - cpu0, "cpu_pushes_s": cpu2 - cpu1,
        }, handle)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
