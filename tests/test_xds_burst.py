"""A fleet reconnecting at once (a control-plane restart, a failover): every stream of a
burst of 3,000 is served. With gRPC's default limits on calls waiting to be picked up
(1,000, 3,000 hard) about a quarter of such a burst is refused and must reconnect."""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.xds_fakes import GROUP, AdsHarness, snapshot
from xds_server import type_urls as t

BURST = 3000


async def test_a_burst_of_new_streams_is_served_in_full():
    harness = await AdsHarness.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{harness.port}",
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(30)]  # 100 streams each: within 128 per connection
    try:
        harness.cache.set_snapshot(GROUP, snapshot(0))
        for channel in channels:
            await channel.channel_ready()

        async def one(index: int) -> str:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
                channels[index % len(channels)]).StreamAggregatedResources()
            try:
                await call.write(discovery_pb2.DiscoveryRequest(
                    type_url=t.CLUSTER, node=base_pb2.Node(id=f"n{index}", cluster=GROUP)))
                response = await call.read()
                return "ok" if response is not grpc.aio.EOF else "eof"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            finally:
                call.cancel()

        results = await asyncio.gather(*(one(i) for i in range(BURST)))
    finally:
        for channel in channels:
            await channel.close()
        await harness.stop()
    refused = [r for r in results if r != "ok"]
    assert not refused, f"{len(refused)} of {BURST} refused: {set(refused)}"
