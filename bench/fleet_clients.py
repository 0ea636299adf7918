"""Simulated Envoys, modelled on real sidecars: N ADS streams, each on its own channel
(its own TCP connection, as every Envoy holds its own), subscribing like Envoy (CDS, EDS,
LDS, RDS), parsing every response and ACKing it. When a connection or stream fails they
retry as Turnout's Envoy bootstrap does (0.25 s, doubling to at most 2 s), and calls wait
for the connection instead of failing fast.

``python -m bench.fleet_clients PORT N FIRST_ID [sotw|delta]``; prints a JSON line with
how many streams are open and answered, failures and CPU time every 0.2 s; runs until killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
from collections import Counter

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_server import type_urls as t

NAMES = {t.ENDPOINT: ["slot_blue", "slot_green"], t.ROUTE: ["ingress_routes"]}
#: Like the bootstrap's retry policy (base 0.25 s, max 2 s); gRPC's default reaches 120 s.
#: Not ``grpc.min_reconnect_backoff_ms``: gRPC also takes it as the connection attempt's
#: deadline (20 s by default), and at 0.25 s a busy server's slow handshakes are abandoned
#: and retried, piling up thousands of dead connections on it (measured: the server hit
#: 20,000 open files with 1,029 of 10,000 streams connected).
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one connection per channel, not shared
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class Counts:
    open = 0
    answered = 0
    failures: Counter[str] = Counter()


async def stream(port: int, node_id: str, protocol: str, counts: Counts) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    answered = False
    while True:
        counts.open += 1
        try:
            async for _ in _once(channel, node_id, protocol):
                if not answered:
                    answered = True
                    counts.answered += 1
        except grpc.aio.AioRpcError as exc:
            counts.failures[f"{exc.code().name}: {exc.details()}"[:80]] += 1
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            # The server ended the call while the first requests were being written (it
            # refuses streams when too many are pending): Envoy retries, and so do we.
            counts.failures[type(exc).__name__] += 1
        finally:
            counts.open -= 1
            if answered:
                counts.answered -= 1
                answered = False
        await asyncio.sleep(0.25 + random.random() * 0.25)


#: Per protocol: the RPC, the first request for a type, and the ACK of a response.
_PROTOCOLS = {
    "sotw": ("StreamAggregatedResources",
             lambda type_url: discovery_pb2.DiscoveryRequest(
                 type_url=type_url, resource_names=NAMES.get(type_url, [])),
             lambda r: discovery_pb2.DiscoveryRequest(
                 type_url=r.type_url, version_info=r.version_info, response_nonce=r.nonce,
                 resource_names=NAMES.get(r.type_url, []))),
    "delta": ("DeltaAggregatedResources",
              lambda type_url: discovery_pb2.DeltaDiscoveryRequest(
                  type_url=type_url, resource_names_subscribe=NAMES.get(type_url, [])),
              lambda r: discovery_pb2.DeltaDiscoveryRequest(
                  type_url=r.type_url, response_nonce=r.nonce)),
}


async def _once(channel: grpc.aio.Channel, node_id: str, protocol: str):  # type: ignore[no-untyped-def]
    """One stream: subscribe to the four types like Envoy, then ACK every response (the
    stub has parsed it, as Envoy parses each one)."""
    method, subscribe, ack = _PROTOCOLS[protocol]
    call = getattr(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), method)(
        wait_for_ready=True)
    for index, type_url in enumerate((t.CLUSTER, t.ENDPOINT, t.LISTENER, t.ROUTE)):
        request = subscribe(type_url)
        if index == 0:
            request.node.CopyFrom(base_pb2.Node(id=node_id, cluster="turnout"))
        await call.write(request)
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        await call.write(ack(response))
        yield response


async def main(port: int, count: int, first_id: int, protocol: str) -> None:
    counts = Counts()
    tasks = []
    for index in range(count):
        tasks.append(asyncio.create_task(stream(port, f"sim-{first_id + index}", protocol,
                                                counts)))
        if index % 50 == 49:
            await asyncio.sleep(0.01)  # sidecars start over time, not in one instant
    while True:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"open": counts.open, "answered": counts.answered,
                          "failures": counts.failures,
                          "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                         sys.argv[4] if len(sys.argv) > 4 else "sotw"))
