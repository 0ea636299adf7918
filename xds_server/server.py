"""The ADS server: state-of-the-world streams, nonces, ACK and NACK.

Rules followed (Envoy's xds_protocol; see the project's NOTES section 2):

* nonces are per stream and per type; a request whose ``response_nonce`` is not the last
  one sent for its type is stale and ignored;
* a NACK is a request carrying ``error_detail``; the rejected version is not resent, the
  stream waits for a new version, and the cache records the node and the message;
* the node is read from a stream's first request and kept for the stream's life;
* LDS and CDS are answered with the full set, RDS and EDS with the requested names, and a
  request naming new resources is answered even when the version is unchanged;
* a reconnecting Envoy that already holds the current version of a wildcard type (CDS,
  LDS) gets no redundant push; RDS and EDS are always answered on a new stream;
* names a stream stops requesting are forgotten, so asking for one again is answered;
* after a CDS response the stream's endpoints are sent again even when unchanged (Envoy
  warms a changed cluster only on a fresh ClusterLoadAssignment);
* pending types go out in the order CDS, EDS, LDS, RDS, and listeners and routes wait
  until the stream has answered its outstanding clusters and endpoints (make before
  break), and while the current clusters or endpoints are NACKed;
* a node whose ``node.cluster`` names no published group is served the default group
  (sidecars often set it to their own service name) and logged;
* only one response per type is outstanding at a time on a stream, and a stream's inbox
  is bounded (a flooding client is read no faster than it is served).

Responses are pre-encoded by the snapshot and shared by every stream; a stream appends
its nonce only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from xds_server import type_urls
from xds_server.cache import SnapshotCache, StreamHandle
from xds_server.snapshot import Snapshot
from xds_server.transport import AuthContext

_CHANGED = object()  # queued by the cache's watcher when the snapshot changes
INBOX_LIMIT = 64  # requests read ahead per stream


async def _read_into(requests, inbox: asyncio.Queue) -> None:  # type: ignore[no-untyped-def]
    try:
        async for request in requests:
            await inbox.put(request)  # waits while the inbox is full: back-pressure
        await inbox.put(grpc.aio.EOF)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the stream broke: let the handler end it
        await inbox.put(exc)


DEFAULT_GROUP = "turnout"


@dataclass
class _TypeState:
    names: frozenset[str] = frozenset()
    nonce: str = ""
    sent_version: str | None = None
    sent_names: frozenset[str] = frozenset()
    outstanding: bool = False
    nacked_version: str | None = None  # the version this stream rejected last


@dataclass
class _Stream:
    handle: StreamHandle | None = None
    types: dict[str, _TypeState] = field(default_factory=dict)
    nonce_counter: int = 0
    change_queued: bool = False
    change_pending: bool = False  # a change seen while the inbox was full

    def next_nonce(self) -> str:
        self.nonce_counter += 1
        return str(self.nonce_counter)


class AdsServer:
    """Serves ``StreamAggregatedResources`` from a :class:`SnapshotCache`.

    Register with ``server.add_generic_rpc_handlers((ads.handler(),))`` on a
    ``grpc.aio.server``. Each stream is one handler coroutine plus one reader task on the
    server's event loop.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        default_group: str = DEFAULT_GROUP,
        logger: logging.Logger | None = None,
        refusal: Callable[[str, AuthContext], str | None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._cache = cache
        self._default_group = default_group
        self._refusal = refusal
        self._on_refused = on_refused
        self._log = logger or logging.getLogger("turnout.xds.server")
        self.sends_by_type: dict[str, int] = dict.fromkeys(type_urls.ALL_TYPES, 0)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(
            self._serve,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=None,  # responses are pre-encoded bytes
        )
        return grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {"StreamAggregatedResources": method},
        )

    async def _serve(self, request_iterator, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        """One stream: a reader task feeds requests into a queue, the cache puts a marker
        there when the snapshot changes, and this coroutine handles both in order."""
        stream = _Stream()
        inbox: asyncio.Queue = asyncio.Queue(maxsize=INBOX_LIMIT)
        reader: asyncio.Task | None = None
        try:
            requests = request_iterator.__aiter__()
            try:
                first = await requests.__anext__()
            except StopAsyncIteration:
                return
            if not first.HasField("node") or not first.node.id:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id"
                )
            if self._refusal is not None:
                reason = self._refusal(first.node.id, context.auth_context())
                if reason is not None:
                    self._log.warning("refused node %s from %s: %s", first.node.id,
                                      context.peer(), reason)
                    if self._on_refused is not None:
                        self._on_refused("node_id")
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
            claimed = first.node.cluster
            group = claimed if claimed and self._cache.snapshot(claimed) is not None \
                else self._default_group
            stream.handle = self._cache.open_stream(first.node.id, group, claimed=claimed)
            if claimed and claimed != group:
                self._log.warning(
                    "node %s claims group %r, which has no configuration: serving the "
                    "default group %r", first.node.id, claimed, group)
            self._log.info(
                "stream %d opened: node %s, group %s",
                stream.handle.stream_id, first.node.id, group,
            )
            def changed() -> None:  # at most one marker queued: a burst is one flush
                if not stream.change_queued:
                    stream.change_queued = True
                    try:
                        inbox.put_nowait(_CHANGED)
                    except asyncio.QueueFull:
                        stream.change_queued = False
                        stream.change_pending = True

            self._cache.watch(stream.handle, changed)
            reader = asyncio.create_task(_read_into(requests, inbox))
            item: object = first
            while True:
                if item is grpc.aio.EOF:
                    return
                if isinstance(item, BaseException):
                    raise item
                responses = (self._flush(stream) if item is _CHANGED
                             else self._on_request(stream, item))  # type: ignore[arg-type]
                for response in responses:
                    yield response
                if stream.change_pending:
                    stream.change_pending = False
                    item = _CHANGED
                    continue
                item = await inbox.get()
                if item is _CHANGED:
                    stream.change_queued = False
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            if stream.handle is not None:
                self._log.info("stream %d closed", stream.handle.stream_id)
                self._cache.close_stream(stream.handle)

    # ---- protocol ---------------------------------------------------------------------
    def _on_request(self, stream: _Stream, request: discovery_pb2.DiscoveryRequest) -> list[bytes]:
        handle = stream.handle
        assert handle is not None
        type_url = request.type_url
        if type_url not in type_urls.ALL_TYPES:
            self._log.warning("node %s asked for unsupported type %s", handle.node_id, type_url)
            return []
        state = stream.types.get(type_url)
        if state is None:
            state = stream.types[type_url] = _TypeState()
            self._cache.subscribed(handle, type_url)
            if request.version_info and not request.response_nonce \
                    and type_url in type_urls.WILDCARD_TYPES:
                # A reconnecting Envoy already holds this full set: no need to push it
                # again. (Named types are always answered: which names it holds is
                # unknown, and a cluster it re-creates needs its endpoints again.)
                state.sent_version = request.version_info
                self._cache.acked(handle, type_url, request.version_info)
        elif not request.response_nonce:
            pass  # a subscription change, not an answer to any response
        elif request.response_nonce != state.nonce:
            return []  # stale: answers a response that a newer one has replaced
        elif request.HasField("error_detail"):
            state.outstanding = False
            state.nacked_version = state.sent_version
            self._cache.nacked(
                handle, type_url, state.sent_version or "", request.error_detail.message
            )
        else:
            state.outstanding = False
            state.nacked_version = None
            self._cache.acked(handle, type_url, request.version_info)
        if type_url not in type_urls.WILDCARD_TYPES:
            state.names = frozenset(request.resource_names)
            state.sent_names &= state.names  # dropped names are forgotten
        return self._flush(stream)

    def _flush(self, stream: _Stream) -> list[bytes]:
        handle = stream.handle
        assert handle is not None
        snapshot = self._cache.snapshot(handle.group)
        if snapshot is None:
            return []
        out: list[bytes] = []
        for type_url in type_urls.PUSH_ORDER:
            state = stream.types.get(type_url)
            if state is None or state.outstanding:
                continue
            if type_url in type_urls.DEPENDENT_TYPES and \
                    self._prerequisites_pending(stream, snapshot):
                continue
            encoded = self._response_for(snapshot, type_url, state)
            if encoded is None:
                continue
            nonce = stream.next_nonce()
            state.nonce = nonce
            state.sent_version = snapshot.version(type_url)
            state.sent_names = state.names
            state.outstanding = True
            if type_url == type_urls.CLUSTER:
                endpoints = stream.types.get(type_urls.ENDPOINT)
                if endpoints is not None:  # warming clusters need their endpoints again
                    endpoints.sent_version = None
            self.sends_by_type[type_url] += 1
            out.append(encoded + discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString())
        return out

    @staticmethod
    def _prerequisites_pending(stream: _Stream, snapshot: Snapshot) -> bool:
        """Clusters or endpoints not answered yet, or rejected at the current version:
        listeners and routes naming them must wait."""
        for type_url in (type_urls.CLUSTER, type_urls.ENDPOINT):
            state = stream.types.get(type_url)
            if state is None:
                continue
            if state.outstanding or state.nacked_version == snapshot.version(type_url):
                return True
        return False

    @staticmethod
    def _response_for(snapshot: Snapshot, type_url: str, state: _TypeState) -> bytes | None:
        version = snapshot.version(type_url)
        if type_url in type_urls.WILDCARD_TYPES:
            return None if state.sent_version == version else snapshot.encode(type_url, None)
        if not state.names:
            return None
        available = state.names & snapshot.names(type_url)
        if not available:
            return None
        newly_requested = not state.names <= state.sent_names
        if state.sent_version == version and not newly_requested:
            return None
        return snapshot.encode(type_url, state.names)


def tune_gc(threshold: int = 50_000) -> None:
    """Make the cyclic garbage collector cheap for a long-lived server: move what exists
    now out of its reach (``gc.freeze``) and collect the young generation less often.
    Measured with bench/fleet.py: gc was ~17 % of the server's CPU at 1,000 streams."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)
