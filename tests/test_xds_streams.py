"""What both ADS variants share (xds_server/streams.py): the node check, the refusal hook
(the mTLS node-id check plugs in here), the choice of group, what is logged, and the
stream's end. Real gRPC on loopback, both variants."""

from __future__ import annotations

import logging

import grpc
import pytest

from tests.xds_fakes import GROUP, FakeDeltaEnvoy, FakeEnvoy, snapshot
from xds_server import AdsServer, DeltaAdsServer, SnapshotCache
from xds_server import type_urls as t
from xds_server.server import SERVER_OPTIONS

VARIANTS = {"sotw": (AdsServer, FakeEnvoy), "delta": (DeltaAdsServer, FakeDeltaEnvoy)}


class Served:
    def __init__(self, variant: str, **options: object) -> None:
        self.server_class, self.client_class = VARIANTS[variant]
        self.cache = SnapshotCache()
        self.cache.set_snapshot(GROUP, snapshot(0))
        self.refused: list[str] = []
        self.ads = self.server_class(self.cache, on_refused=self.refused.append, **options)

    async def __aenter__(self) -> Served:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.server.add_generic_rpc_handlers((self.ads.handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(None)

    def client(self, node: str = "n1", cluster: str = GROUP):  # type: ignore[no-untyped-def]
        return self.client_class(self.port, node, cluster)


def _first(client, type_url: str = t.CLUSTER):  # type: ignore[no-untyped-def]
    return client.request(type_url)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_refused_node_gets_permission_denied_with_the_reason(variant, caplog):
    seen = []

    def refusal(node_id: str, auth: object) -> str | None:
        seen.append(node_id)
        assert isinstance(auth, dict) and auth  # the connection's auth context
        return "certificate does not name node n1" if node_id == "n1" else None

    caplog.set_level(logging.WARNING, logger="turnout.xds.server")
    async with Served(variant, refusal=refusal) as served:
        client = served.client("n1")
        await _first(client)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.call.read()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "certificate does not name node n1"
        assert served.refused == ["node_id"]
        assert served.cache.status(GROUP)["proxies"] == []
        await client.close()
        allowed = served.client("n2")  # the same hook lets another node in
        await _first(allowed)
        assert (await allowed.response()).type_url == t.CLUSTER
        assert seen == ["n1", "n2"] and served.refused == ["node_id"]
        await allowed.close()
    assert any(r.getMessage().startswith("refused node n1 from ipv4:127.0.0.1:")
               and r.getMessage().endswith(": certificate does not name node n1")
               for r in caplog.records)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_no_node_id_is_invalid(variant):
    async with Served(variant) as served:
        client = served.client("")
        await _first(client)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.call.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "the first request must carry node.id"
        await client.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_group_choice_and_what_is_logged(variant, caplog):
    caplog.set_level(logging.INFO, logger="turnout.xds.server")
    async with Served(variant) as served:
        served.cache.set_snapshot("payments", snapshot(50))
        named = served.client("edge-1", "payments")
        await _first(named)
        await named.response()
        unknown = served.client("edge-2", "checkout")
        await _first(unknown)
        await unknown.response()
        plain = served.client("edge-3", "")
        await _first(plain)
        await plain.response()
        groups = {p["node"]: g for g in ("payments", GROUP)
                  for p in served.cache.status(g)["proxies"]}
        assert groups == {"edge-1": "payments", "edge-2": GROUP, "edge-3": GROUP}
        for client in (named, unknown, plain):
            await client.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("node edge-2 claims group 'checkout', which has no configuration: serving "
               f"the default group {GROUP!r}" in m for m in messages)
    assert not any("edge-1 claims" in m or "edge-3 claims" in m for m in messages)
    method = served.server_class.METHOD
    assert any(m.startswith(f"{method} stream ") and "opened: node edge-1, group payments"
               in m for m in messages)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_closed_stream_leaves_the_fleet(variant, caplog):
    caplog.set_level(logging.INFO, logger="turnout.xds.server")
    async with Served(variant) as served:
        client = served.client("leaver")
        await _first(client)
        await client.response()
        assert [p["node"] for p in served.cache.status(GROUP)["proxies"]] == ["leaver"]
        await client.close()
        for _ in range(100):
            if not served.cache.status(GROUP)["proxies"]:
                break
            import asyncio

            await asyncio.sleep(0.01)
        assert served.cache.status(GROUP)["proxies"] == []
    assert "stream 1 closed" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_nonces_are_fresh_per_response(variant):
    async with Served(variant) as served:
        client = served.client()
        await client.request(t.CLUSTER)
        first = await client.response()
        await client.ack(first)
        await client.request(t.LISTENER)
        second = await client.response()
        assert (first.nonce, second.nonce) == ("1", "2")
        await client.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_an_unknown_type_is_logged_with_the_node_and_ignored(variant, caplog):
    caplog.set_level(logging.WARNING, logger="turnout.xds.server")
    async with Served(variant) as served:
        client = served.client("curious")
        await client.request("type.googleapis.com/some.Other")
        assert await client.no_response()
        await client.request(t.CLUSTER)  # the stream still serves
        assert (await client.response()).type_url == t.CLUSTER
        await client.close()
    assert any(r.getMessage() == "node curious asked for unsupported type "
               "type.googleapis.com/some.Other" for r in caplog.records)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_client_that_stops_sending_ends_its_stream_cleanly(variant):
    async with Served(variant) as served:
        client = served.client("done")
        await client.request(t.CLUSTER)
        await client.response()
        await client.call.done_writing()
        import asyncio

        ended = await asyncio.wait_for(client.responses.get(), 2)
        assert ended is grpc.aio.EOF
        assert await client.call.code() == grpc.StatusCode.OK
        await client.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_an_outstanding_type_does_not_hold_back_the_next(variant):
    async with Served(variant) as served:
        client = served.client()
        await client.request(t.CLUSTER)
        await client.response()  # not answered: clusters stay outstanding
        if variant == "sotw":
            await client.request(t.ENDPOINT, names=("slot_blue",))
        else:
            await client.request(t.ENDPOINT, subscribe=("slot_blue",))
        assert (await client.response()).type_url == t.ENDPOINT
        await client.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_listeners_wait_for_outstanding_endpoints_without_clusters(variant):
    async with Served(variant) as served:
        client = served.client()
        if variant == "sotw":
            await client.request(t.ENDPOINT, names=("slot_blue",))
        else:
            await client.request(t.ENDPOINT, subscribe=("slot_blue",))
        endpoints = await client.response()
        await client.request(t.LISTENER)
        assert await client.no_response()  # endpoints outstanding: listeners wait
        await client.ack(endpoints) if variant == "delta" else await client.ack(
            endpoints, names=("slot_blue",))
        assert (await client.response()).type_url == t.LISTENER
        await client.close()


class _Requests:
    """A request stream the test feeds; the server's reader drains it into its inbox."""

    def __init__(self) -> None:
        import asyncio

        self.queue: asyncio.Queue = asyncio.Queue()

    def __aiter__(self):  # type: ignore[no-untyped-def]
        return self

    async def __anext__(self):  # type: ignore[no-untyped-def]
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


async def test_a_change_while_the_inbox_is_full_is_not_lost():
    """A client that floods the stream with stale answers fills its inbox (64 requests
    read ahead); a snapshot change arriving then is remembered and sent, and so is the
    next one; the stream goes on serving after."""
    import asyncio

    from envoy.service.discovery.v3 import discovery_pb2

    from xds_server.streams import INBOX_LIMIT

    cache = SnapshotCache()
    cache.set_snapshot(GROUP, snapshot(0))
    ads = AdsServer(cache)
    requests = _Requests()
    stream = ads._serve(requests, context=None)

    def request(type_url: str, names: tuple[str, ...] = (), version: str = "",
                nonce: str = "", node: bool = False) -> None:
        r = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                           version_info=version, response_nonce=nonce)
        if node:
            r.node.id, r.node.cluster = "flood", GROUP
        requests.queue.put_nowait(r)

    async def response() -> discovery_pb2.DiscoveryResponse:
        return discovery_pb2.DiscoveryResponse.FromString(
            await asyncio.wait_for(stream.__anext__(), 2))

    request(t.CLUSTER, node=True)
    cds = await response()
    request(t.CLUSTER, version=cds.version_info, nonce=cds.nonce)  # ACK
    request(t.ENDPOINT, names=("slot_green",))
    eds = await response()
    request(t.ENDPOINT, names=("slot_green",), version=eds.version_info, nonce=eds.nonce)
    request(t.LISTENER)
    lds = await response()  # parked right after yielding this; only LDS is outstanding
    for _ in range(INBOX_LIMIT + 5):
        request(t.LISTENER, version="old", nonce="stale")  # stale: answered by nothing
    for _ in range(50):
        await asyncio.sleep(0)  # the reader fills the inbox and waits
    cache.set_snapshot(GROUP, snapshot(0, green_healthy=False))  # green's endpoints change
    changed = await response()
    assert changed.type_url == t.ENDPOINT and changed.version_info != eds.version_info
    assert lds.type_url == t.LISTENER
    # The next change, with room in the inbox, comes through the marker as usual.
    request(t.ENDPOINT, names=("slot_green",), version=changed.version_info,
            nonce=changed.nonce)
    waiting = asyncio.create_task(response())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not waiting.done()
    cache.set_snapshot(GROUP, snapshot(0))
    again = await waiting
    assert again.type_url == t.ENDPOINT and again.version_info == eds.version_info
    requests.queue.put_nowait(None)  # the client ends the stream: it ends cleanly
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(stream.__anext__(), 2)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_stream_closed_before_its_first_request_ends_cleanly(variant):
    async with Served(variant) as served:
        client = served.client("silent")
        await client.call.done_writing()
        import asyncio

        assert await asyncio.wait_for(client.responses.get(), 2) is grpc.aio.EOF
        assert await client.call.code() == grpc.StatusCode.OK
        await client.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_an_oversized_node_id_or_group_is_refused_and_logs_stay_one_line(variant,
                                                                               caplog):
    caplog.set_level(logging.INFO, logger="turnout.xds.server")
    async with Served(variant) as served:
        for node, group, field in (("n" * 257, "", "node.id"), ("ok", "g" * 257,
                                                                "node.cluster")):
            client = served.client(node, group)
            await _first(client)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == f"{field} is 257 characters; at most 256"
            await client.close()
        assert served.cache.status(GROUP)["proxies"] == []
        forged = served.client("edge\nWARNING forged line", "x\ny")
        await _first(forged)
        await forged.response()
        await forged.close()
    assert not any("\nWARNING forged" in r.getMessage() for r in caplog.records)
    assert any("edge\\nWARNING forged line" in r.getMessage() for r in caplog.records)
    assert any("x\\ny" in r.getMessage() for r in caplog.records)  # the group too
