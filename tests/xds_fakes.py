"""Helpers for protocol tests: an in-process ADS server and a scripted Envoy-like client
that speaks the real gRPC protocol over loopback."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from triton_slots.slot import Endpoint, Slot
from turnout.topology import build_snapshot
from turnout.weights import Weights
from xds_server import AdsServer, DeltaAdsServer, Snapshot, SnapshotCache
from xds_server.server import SERVER_OPTIONS

GROUP = "turnout"
BLUE = Endpoint("127.0.0.1", 1001, 1002, 1003)
GREEN = Endpoint("127.0.0.1", 2001, 2002, 2003)


def snapshot(green: int = 0, *, green_healthy: bool = True) -> Snapshot:
    return build_snapshot(
        ingress_host="127.0.0.1",
        ingress_port=8080,
        slots={"blue": Slot("blue", (BLUE,)), "green": Slot("green", (GREEN,))},
        health={BLUE: True, GREEN: green_healthy},
        weights=Weights.with_green(green),
    )


@dataclass
class AdsHarness:
    cache: SnapshotCache
    ads: AdsServer
    server: grpc.aio.Server
    port: int
    delta: DeltaAdsServer

    @classmethod
    async def start(cls) -> AdsHarness:
        cache = SnapshotCache()
        ads = AdsServer(cache)
        delta = DeltaAdsServer(cache)
        server = grpc.aio.server(options=SERVER_OPTIONS)  # the control plane's options
        server.add_generic_rpc_handlers((ads.handler(), delta.handler()))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return cls(cache, ads, server, port, delta)

    async def stop(self) -> None:
        await self.server.stop(grace=None)

    def client(self, node_id: str = "node-a", cluster: str = GROUP) -> FakeEnvoy:
        return FakeEnvoy(self.port, node_id, cluster)

    def delta_client(self, node_id: str = "node-d", cluster: str = GROUP) -> FakeDeltaEnvoy:
        return FakeDeltaEnvoy(self.port, node_id, cluster)


class _FakeStream:
    """One ADS stream (``method`` of the ADS service) read into a queue."""

    method = ""

    def __init__(self, port: int, node_id: str, cluster: str) -> None:
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = getattr(stub, self.method)()
        self.sent_node = False
        self.responses: asyncio.Queue = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read_all())

    async def _read_all(self) -> None:
        while True:
            message = await self.call.read()
            await self.responses.put(message)
            if message is grpc.aio.EOF:
                return

    async def response(self, timeout: float = 2.0):  # type: ignore[no-untyped-def]
        message = await asyncio.wait_for(self.responses.get(), timeout)
        assert message is not grpc.aio.EOF, "stream ended"
        return message

    async def no_response(self, within: float = 0.3) -> bool:
        try:
            await asyncio.wait_for(self.responses.get(), within)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self._reader.cancel()
        self.call.cancel()
        await self.channel.close()


class FakeEnvoy(_FakeStream):
    """One state-of-the-world ADS stream driven step by step, as Envoy would."""

    method = "StreamAggregatedResources"

    async def request(
        self,
        type_url: str,
        *,
        names: tuple[str, ...] = (),
        version: str = "",
        nonce: str = "",
        error: str | None = None,
        with_node: bool | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version,
            response_nonce=nonce,
        )
        if with_node if with_node is not None else not self.sent_node:
            request.node.CopyFrom(self.node)
            self.sent_node = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(request)

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()
                  ) -> None:
        await self.request(response.type_url, names=names, version=response.version_info,
                           nonce=response.nonce)


class FakeDeltaEnvoy(_FakeStream):
    """One incremental ADS stream driven step by step."""

    method = "DeltaAggregatedResources"

    async def request(self, type_url: str, *, subscribe: tuple[str, ...] = (),
                      unsubscribe: tuple[str, ...] = (), nonce: str = "",
                      error: str | None = None, initial: dict[str, str] | None = None
                      ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if not self.sent_node:
            request.node.CopyFrom(self.node)
            self.sent_node = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(request)

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.request(response.type_url, nonce=response.nonce)
