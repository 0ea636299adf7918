"""Simulated Envoys: N ADS streams that subscribe like Envoy (CDS, EDS, LDS, RDS), parse
every response and ACK it. ``python -m bench.fleet_clients PORT N FIRST_ID``; runs until
killed. Streams share channels, 100 per channel."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_server import type_urls as t

NAMES = {t.ENDPOINT: ["slot_blue", "slot_green"], t.ROUTE: ["ingress_routes"]}


async def stream(channel: grpc.aio.Channel, node_id: str) -> None:
    """Like Envoy: when the stream fails (refused under load, reset), open it again."""
    while True:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await _stream_once(channel, node_id)
        await asyncio.sleep(0.25 + random.random() * 0.25)


async def _stream_once(channel: grpc.aio.Channel, node_id: str) -> None:
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    node = base_pb2.Node(id=node_id, cluster="turnout")
    first = True
    for type_url in (t.CLUSTER, t.ENDPOINT, t.LISTENER, t.ROUTE):
        request = discovery_pb2.DiscoveryRequest(type_url=type_url,
                                                 resource_names=NAMES.get(type_url, []))
        if first:
            request.node.CopyFrom(node)
            first = False
        await call.write(request)
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        parsed = discovery_pb2.DiscoveryResponse.FromString(response.SerializeToString())
        await call.write(discovery_pb2.DiscoveryRequest(
            type_url=parsed.type_url, version_info=parsed.version_info,
            response_nonce=parsed.nonce, resource_names=NAMES.get(parsed.type_url, [])))


async def main(port: int, count: int, first_id: int) -> None:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range((count + 99) // 100)]
    tasks = []
    for index in range(count):
        tasks.append(asyncio.create_task(stream(channels[index // 100],
                                                f"sim-{first_id + index}")))
        if index % 100 == 99:
            await asyncio.sleep(0.01)  # do not stampede the accept queue
    await asyncio.gather(*tasks, return_exceptions=True)  # until the server goes away


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
