"""The ADS server: state-of-the-world streams, nonces, ACK and NACK.

Rules followed (Envoy's xDS protocol, envoyproxy/data-plane-api ``xds_protocol.rst``):

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

from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from xds_server import type_urls
from xds_server.cache import StreamHandle
from xds_server.snapshot import Snapshot
from xds_server.streams import (
    DEFAULT_GROUP,
    INBOX_LIMIT,
    Session,
    StreamServer,
    sendable,
    settled,
)

__all__ = ["DEFAULT_GROUP", "INBOX_LIMIT", "AdsServer", "tune_gc"]


@dataclass
class _TypeState:
    names: frozenset[str] = frozenset()
    nonce: str = ""
    sent_version: str | None = None
    sent_names: frozenset[str] = frozenset()
    outstanding: bool = False
    nacked_version: str | None = None  # the version this stream rejected last
    wildcard: bool = True  # LDS/CDS without names (Envoy); gRPC clients name theirs


class _Stream(Session):
    types: dict[str, _TypeState]


class AdsServer(StreamServer):
    """Serves ``StreamAggregatedResources`` from a :class:`SnapshotCache`.

    Register with ``server.add_generic_rpc_handlers((ads.handler(),))`` on a
    ``grpc.aio.server``. Each stream is one handler coroutine plus one reader task on the
    server's event loop (see :mod:`xds_server.streams`).
    """

    METHOD = "StreamAggregatedResources"
    REQUEST = discovery_pb2.DiscoveryRequest

    def new_session(self) -> _Stream:
        return _Stream()

    # ---- protocol ---------------------------------------------------------------------
    def on_request(self, stream: _Stream, handle: StreamHandle,
                   request: discovery_pb2.DiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        state, new = self._state(stream, handle, type_url, lambda: _TypeState(
            wildcard=type_urls.is_wildcard(type_url, request.resource_names)))
        if new:
            if request.version_info and not request.response_nonce and state.wildcard:
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
        wildcard = type_urls.is_wildcard(type_url, request.resource_names)
        names = state.names if wildcard else frozenset(request.resource_names)
        if request.response_nonce and wildcard == state.wildcard and names == state.names \
                and settled(stream, self._cache.snapshot(handle.group)):
            return []  # an answer that changes nothing: nothing new to send
        state.wildcard = wildcard
        if not wildcard:
            state.names = names
            state.sent_names &= names  # dropped names are forgotten
        return self.flush(stream)

    def flush(self, stream: _Stream) -> list[bytes]:
        handle = stream.handle
        assert handle is not None
        snapshot = self._cache.snapshot(handle.group)
        if snapshot is None:
            return []
        out: list[bytes] = []
        for type_url, state in sendable(stream, snapshot):
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
    def _response_for(snapshot: Snapshot, type_url: str, state: _TypeState) -> bytes | None:
        version = snapshot.version(type_url)
        if state.wildcard:
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


#: Options for the ``grpc.aio`` server carrying ADS. gRPC refuses (CANCELLED) new calls
#: once more than 1,000 wait to be picked up by the application (3,000 hard): a fleet
#: reconnecting at once (a control plane restart, a failover) is exactly that, and each
#: refusal costs a reconnect. Measured with bench/fleet.py (10,000 sidecars from 4
#: processes): with the defaults 57,152 refused attempts before all connected, 0 now.
#: A connection carries what one proxy needs (Envoy: ADS and the access-log stream; a
#: process of proxyless clients shares one), so at most 128 streams at once on one (gRPC's
#: default: unbounded); a connection must finish its HTTP/2 (and TLS)
#: handshake within 10 s, and one with no stream open is closed after 60 s. Messages a
#: proxy sends (requests, ACKs, access-log batches) are at most 512 KiB: Envoy sends
#: access-log batches of 16 KB and requests of a few KB; anything bigger is refused by
#: gRPC itself (RESOURCE_EXHAUSTED) before Python reads it.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_concurrent_streams", 128),
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
    ("grpc.server_handshake_timeout_ms", 10_000),
    ("grpc.max_connection_idle_ms", 60_000),
    ("grpc.max_receive_message_length", 512 * 1024),
]


def raise_open_files_limit() -> int:
    """Every proxy holds a connection, a file descriptor here: take the soft limit up to
    the hard limit (returned)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tune_gc(threshold: int = 50_000) -> None:
    """Make the cyclic garbage collector cheap for a long-lived server: move what exists
    now out of its reach (``gc.freeze``) and collect the young generation less often.
    Measured with bench/fleet.py: gc was ~17 % of the server's CPU at 1,000 streams."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)
