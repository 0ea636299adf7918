"""One ADS serving process of the fleet benchmark (state of the world and delta on one
port). Several of these bind the same port (SO_REUSEPORT): the kernel spreads the
proxies' connections over them, as it would over a control plane's serving processes.

``python -m bench.fleet_server PORT``: prints ``{"port": P}`` once listening, then takes
one command per line on stdin and answers one JSON line on stdout:
``status`` -> connected and in-sync streams, RSS and CPU time; ``push I`` -> publish
the I-th weights and wait for every local stream, -> seconds and ACKs; ``quit``."""

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
from xds_server import AdsServer, DeltaAdsServer, SnapshotCache, type_urls
from xds_server.server import SERVER_OPTIONS, tune_gc

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


async def main(port: int) -> None:
    cache = SnapshotCache()
    server = grpc.aio.server(options=[*SERVER_OPTIONS, ("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((AdsServer(cache).handler(),
                                     DeltaAdsServer(cache).handler()))
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    cache.set_snapshot(GROUP, snapshot(0))
    tune_gc()
    rss0 = rss_mib()
    print(json.dumps({"port": port}), flush=True)
    profiler = None
    if os.environ.get("TURNOUT_PROFILE"):  # cProfile of the pushes only
        import cProfile

        profiler = cProfile.Profile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "status":
            _, connected, in_sync = cache.sync_counts(GROUP, type_urls.ROUTE)
            answer = {"connected": connected, "in_sync": in_sync,
                      "rss_mib": rss_mib() - rss0, "cpu_s": cpu_s()}
        elif line[0] == "push":
            if profiler is not None:
                profiler.enable()
            started = time.monotonic()
            result = await cache.publish_and_wait(GROUP, snapshot(1 + int(line[1]) % 99),
                                                  timeout=120)
            answer = {"seconds": time.monotonic() - started, "acked": result.acked,
                      "streams": len(result.outcomes)}
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(os.environ["TURNOUT_PROFILE"])
        else:
            break
        print(json.dumps(answer), flush=True)
    await server.stop(grace=None)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
