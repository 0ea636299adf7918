"""What every ADS stream shares, whichever variant of the protocol it speaks: the node
check on the first request, the refusal hook (mTLS node ids), the choice of node group,
the cache's stream handle, and the loop that interleaves the client's requests with the
cache's change notices.

:class:`~xds_server.server.AdsServer` (state of the world) and
:class:`~xds_server.delta.DeltaAdsServer` (incremental) subclass :class:`StreamServer`
and supply two things: what to do with a request and what to send when the snapshot
changes. Responses are bytes (pre-encoded, shared by every stream; a stream adds its
nonce)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from xds_server import type_urls
from xds_server.cache import SnapshotCache, StreamHandle
from xds_server.snapshot import Snapshot
from xds_server.text import printable
from xds_server.transport import AuthContext

DEFAULT_GROUP = "turnout"
INBOX_LIMIT = 64  # requests read ahead per stream
MAX_NAME = 256  # characters of a node id or node group a proxy may claim

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_CHANGED = object()  # queued by the cache's watcher when the snapshot changes


async def _read_into(requests: AsyncIterator[Any], inbox: asyncio.Queue) -> None:
    try:
        async for request in requests:
            await inbox.put(request)  # waits while the inbox is full: back-pressure
        await inbox.put(grpc.aio.EOF)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the stream broke: let the handler end it
        await inbox.put(exc)


class Session:
    """Per-stream bookkeeping shared by both protocol variants. ``types`` holds a state per
    type URL with at least ``outstanding`` (truthy while a response awaits its answer) and
    ``nacked_version``."""

    def __init__(self) -> None:
        self.types: dict[str, Any] = {}
        self.handle: StreamHandle | None = None
        # The snapshot the last flush looked at, and whether it left a type waiting (a
        # response outstanding, or listeners/routes behind clusters): an ACK that changes
        # nothing else then needs no new look (the second of a push's two per stream).
        self.flushed: Snapshot | None = None
        self.blocked = False
        self.nonce_counter = 0
        self.change_queued = False
        self.change_pending = False  # a change seen while the inbox was full

    def next_nonce(self) -> str:
        self.nonce_counter += 1
        return str(self.nonce_counter)


class StreamServer:
    """The stream lifecycle; subclasses implement :meth:`new_session`,
    :meth:`on_request` and :meth:`flush`, and name their RPC in :attr:`METHOD`."""

    METHOD = ""
    REQUEST: Any = None  # the request message class

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

    # ---- what a protocol variant supplies ------------------------------------------------
    def new_session(self) -> Session:
        return Session()

    def on_request(self, session: Any, handle: StreamHandle, request: Any) -> list[bytes]:
        """A request for one of the four known types from the stream of ``handle``."""
        raise NotImplementedError

    def flush(self, session: Any) -> list[bytes]:
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------
    def _state(self, session: Session, handle: StreamHandle, type_url: str,
               make: Callable[[], Any]) -> tuple[Any, bool]:
        """The stream's state for ``type_url`` and whether it is new (a new subscription,
        told to the cache); ``make`` builds it."""
        state = session.types.get(type_url)
        if state is not None:
            return state, False
        state = session.types[type_url] = make()
        self._cache.subscribed(handle, type_url)
        return state, True

    def _dispatch(self, session: Session, request: Any) -> list[bytes]:
        handle = session.handle
        assert handle is not None
        if request.type_url not in type_urls.ALL_TYPES:
            self._log.warning("node %s asked for unsupported type %s", printable(handle.node_id),
                              printable(request.type_url))
            return []
        return self.on_request(session, handle, request)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(
            self._serve,
            request_deserializer=self.REQUEST.FromString,
            response_serializer=None,  # responses are pre-encoded bytes
        )
        return grpc.method_handlers_generic_handler(SERVICE, {self.METHOD: method})

    async def _open(self, session: Session, first: Any,
                    context: grpc.aio.ServicerContext) -> StreamHandle:
        if not first.HasField("node") or not first.node.id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id"
            )
        for field, value in (("node.id", first.node.id), ("node.cluster", first.node.cluster)):
            if len(value) > MAX_NAME:  # kept in status, logs and the dashboard: bounded
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{field} is {len(value)} characters; at most {MAX_NAME}")
        if self._refusal is not None:
            reason = self._refusal(first.node.id, context.auth_context())
            if reason is not None:
                self._log.warning("refused node %s from %s: %s", printable(first.node.id),
                                  printable(context.peer()), reason)
                if self._on_refused is not None:
                    self._on_refused("node_id")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        claimed = first.node.cluster
        group = claimed if claimed and self._cache.snapshot(claimed) is not None \
            else self._default_group
        handle = self._cache.open_stream(first.node.id, group, claimed=claimed)
        session.handle = handle
        if claimed and claimed != group:
            self._log.warning(
                "node %s claims group '%s', which has no configuration: serving the "
                "default group %r", printable(first.node.id), printable(claimed), group)
        self._log.info("%s stream %d opened: node %s, group %s", self.METHOD,
                       handle.stream_id, printable(first.node.id), printable(group))
        return handle

    async def _serve(self, request_iterator, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        """One stream: a reader task feeds requests into a queue, the cache puts a marker
        there when the snapshot changes, and this coroutine handles both in order."""
        session = self.new_session()
        inbox: asyncio.Queue = asyncio.Queue(maxsize=INBOX_LIMIT)
        reader: asyncio.Task | None = None
        try:
            requests = request_iterator.__aiter__()
            try:
                first = await requests.__anext__()
            except StopAsyncIteration:
                return
            handle = await self._open(session, first, context)

            def changed() -> None:  # at most one marker queued: a burst is one flush
                if not session.change_queued:
                    session.change_queued = True
                    try:
                        inbox.put_nowait(_CHANGED)
                    except asyncio.QueueFull:
                        session.change_queued = False
                        session.change_pending = True

            self._cache.watch(handle, changed)
            reader = asyncio.create_task(_read_into(requests, inbox))
            item: object = first
            while True:
                if item is grpc.aio.EOF:
                    return
                if isinstance(item, BaseException):
                    raise item
                responses = (self.flush(session) if item is _CHANGED
                             else self._dispatch(session, item))
                for response in responses:
                    yield response
                if session.change_pending:
                    session.change_pending = False
                    item = _CHANGED
                    continue
                item = await inbox.get()
                if item is _CHANGED:
                    session.change_queued = False
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            if session.handle is not None:
                self._log.info("stream %d closed", session.handle.stream_id)
                self._cache.close_stream(session.handle)


def sendable(session: Session, snapshot: Snapshot) -> Iterator[tuple[str, Any]]:
    """The session's subscribed types that may get a response now, in push order (CDS,
    EDS, LDS, RDS): none with a response outstanding, and listeners and routes only once
    clusters and endpoints are answered and not rejected at the current version."""
    session.flushed = snapshot
    session.blocked = False
    for type_url in type_urls.PUSH_ORDER:
        state = session.types.get(type_url)
        if state is None:
            continue
        if state.outstanding or (type_url in type_urls.DEPENDENT_TYPES
                                 and _prerequisites_pending(session, snapshot)):
            session.blocked = True
            continue
        yield type_url, state


def settled(session: Session, snapshot: Snapshot | None) -> bool:
    """Nothing can have become sendable since the last flush: same snapshot, nothing was
    waiting. (An answer to a response, with no subscription change, then needs no flush.)"""
    return snapshot is session.flushed and not session.blocked


def _prerequisites_pending(session: Session, snapshot: Snapshot) -> bool:
    for type_url in (type_urls.CLUSTER, type_urls.ENDPOINT):
        state = session.types.get(type_url)
        if state is None:
            continue
        if state.outstanding or state.nacked_version == snapshot.version(type_url):
            return True
    return False
