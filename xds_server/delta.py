"""Incremental ("delta") ADS: ``DeltaAggregatedResources`` beside state of the world.

A sibling of :class:`~xds_server.server.AdsServer` over the same snapshot cache: the
same snapshots, groups, ACK tracking and push order, but each response carries only the
resources whose per-resource version the client does not hold, plus the names it must
remove. Rules followed (Envoy's xds_protocol, "Incremental xDS"):

* subscriptions change with ``resource_names_subscribe`` / ``_unsubscribe`` on any
  request, even one whose nonce is stale (only its ACK/NACK meaning is ignored);
* LDS and CDS start as wildcard subscriptions when the first request names nothing (or
  names ``*``); named-only resources (gRPC API listeners) go only to clients naming them;
* ``initial_resource_versions`` on a reconnect say what the client holds: only what
  differs is sent, and held names that no longer exist are removed;
* a NACK (``error_detail``) restores what the client holds to what it held before the
  rejected response; the rejected resources are not resent until the type has a new
  version (names subscribed meanwhile are still answered), and the cache records the
  node and the message;
* a type with nothing to send for a new snapshot counts as ACKed at once (the client
  already holds exactly that);
* one response per type is outstanding at a time, CDS then EDS then LDS then RDS, and
  listeners and routes wait while clusters or endpoints are outstanding or rejected;
  after a cluster update the endpoints are sent again (a cluster warms only on a fresh
  ClusterLoadAssignment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from xds_server import type_urls
from xds_server.cache import StreamHandle
from xds_server.snapshot import Snapshot
from xds_server.streams import Session, StreamServer, sendable, settled

__all__ = ["DeltaAdsServer"]


@dataclass(frozen=True)
class _Sent:
    nonce: str
    version: str  # the type's snapshot version this response brings the client to
    before: dict[str, str | None]  # what the client held of each name it touches


@dataclass
class _DeltaType:
    wildcard: bool
    subscribed: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # name -> version the client has
    outstanding: _Sent | None = None
    nacked_version: str | None = None
    rejected: frozenset[str] = frozenset()  # the names of the response it rejected
    acked_version: str | None = None


class _DeltaStream(Session):
    types: dict[str, _DeltaType]


class DeltaAdsServer(StreamServer):
    """Serves ``DeltaAggregatedResources`` from a :class:`SnapshotCache`; register its
    :meth:`handler` on the same ``grpc.aio`` server as the state-of-the-world one."""

    METHOD = "DeltaAggregatedResources"
    REQUEST = discovery_pb2.DeltaDiscoveryRequest

    def new_session(self) -> _DeltaStream:
        return _DeltaStream()

    def on_request(self, stream: _DeltaStream, handle: StreamHandle,
                   request: discovery_pb2.DeltaDiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        state, new = self._state(stream, handle, type_url, lambda: _DeltaType(
            wildcard=type_urls.is_wildcard(type_url, request.resource_names_subscribe)))
        if new:
            state.held.update(request.initial_resource_versions)
        changes = bool(request.resource_names_subscribe or request.resource_names_unsubscribe)
        for name in request.resource_names_subscribe:
            if name == "*":
                state.wildcard = type_url in type_urls.WILDCARD_TYPES
            else:
                state.subscribed.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.subscribed.discard(name)
                state.held.pop(name, None)  # the client forgets it
        sent = state.outstanding
        if request.response_nonce and sent is not None and request.response_nonce == sent.nonce:
            state.outstanding = None
            if request.HasField("error_detail"):
                for name, version in sent.before.items():  # it kept what it had
                    if version is None:
                        state.held.pop(name, None)
                    else:
                        state.held[name] = version
                state.nacked_version = sent.version
                state.rejected = frozenset(sent.before)
                self._cache.nacked(handle, type_url, sent.version, request.error_detail.message)
            elif sent.version == state.nacked_version:
                pass  # it took names it had not rejected; what it rejected stays rejected
            else:
                state.nacked_version = None
                state.rejected = frozenset()
                state.acked_version = sent.version
                self._cache.acked(handle, type_url, sent.version)
            if not changes and settled(stream, self._cache.snapshot(handle.group)):
                return []  # an answer that changes nothing: nothing new to send
        return self.flush(stream)

    def flush(self, stream: _DeltaStream) -> list[bytes]:
        handle = stream.handle
        assert handle is not None
        snapshot = self._cache.snapshot(handle.group)
        if snapshot is None:
            return []
        out: list[bytes] = []
        for type_url, state in sendable(stream, snapshot):
            version = snapshot.version(type_url)
            held_back = state.rejected if state.nacked_version == version else frozenset()
            desired = set(state.subscribed & snapshot.names(type_url))
            if state.wildcard:
                desired |= snapshot.wildcard_names(type_url)
            versions = snapshot.resource_versions(type_url)
            changed = frozenset(n for n in desired - held_back
                                if state.held.get(n) != versions[n])
            removed = frozenset(state.held.keys() - desired - held_back)
            if held_back:  # rejected at this version: only names it has not rejected go
                if changed or removed:
                    out.append(self._send(stream, state, snapshot, type_url, changed,
                                          removed))
                continue
            if not changed and not removed:
                if state.acked_version != version:  # it already holds exactly this
                    state.acked_version = version
                    state.nacked_version = None
                    self._cache.acked(handle, type_url, version)
                continue
            out.append(self._send(stream, state, snapshot, type_url, changed, removed))
        return out

    def _send(self, stream: _DeltaStream, state: _DeltaType, snapshot: Snapshot,
              type_url: str, changed: frozenset[str], removed: frozenset[str]) -> bytes:
        versions = snapshot.resource_versions(type_url)
        nonce = stream.next_nonce()
        state.outstanding = _Sent(nonce, snapshot.version(type_url),
                                  {n: state.held.get(n) for n in changed | removed})
        for name in changed:
            state.held[name] = versions[name]
        for name in removed:
            del state.held[name]
        if type_url == type_urls.CLUSTER and changed:
            endpoints = stream.types.get(type_urls.ENDPOINT)
            if endpoints is not None:  # warming clusters need their endpoints again
                endpoints.held.clear()
        self.sends_by_type[type_url] += 1
        return (snapshot.encode_delta(type_url, changed, removed)
                + discovery_pb2.DeltaDiscoveryResponse(nonce=nonce).SerializeToString())

