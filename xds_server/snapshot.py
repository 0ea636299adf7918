"""Snapshots: one frozen, versioned set of Envoy resources for a node group.

A snapshot is a value. Each type's version is a digest of its resources' deterministic
serialisation, so publishing the same content twice yields the same version (a restarted
control plane recognises what a reconnecting Envoy already has and pushes nothing).
Responses are encoded once per (type, requested names) and the bytes are shared by every
stream: callers only append their nonce.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server import type_urls
from xds_server.errors import InconsistentSnapshotError

_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def resource_name(message: Message) -> str:
    """The xDS name of a resource (``cluster_name`` for a ClusterLoadAssignment)."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return message.name  # type: ignore[attr-defined]


#: Encoded responses kept per snapshot (per type and requested names), oldest dropped.
MAX_MEMOS = 256


@dataclass(frozen=True)
class _TypeSet:
    """One type's resources, packed once, with the version digest over them."""

    version: str
    messages: Mapping[str, Message]
    packed: Mapping[str, any_pb2.Any]
    names: frozenset[str]
    #: Resources sent only to clients that name them (listeners with an ``api_listener``,
    #: for gRPC's xDS client): a wildcard subscriber (Envoy) would reject them.
    named_only: frozenset[str] = frozenset()

    @functools.cached_property
    def resource_versions(self) -> Mapping[str, str]:
        """Per-resource versions (delta xDS): a digest of each resource's bytes."""
        return MappingProxyType({name: hashlib.sha256(a.value).hexdigest()[:16]
                                 for name, a in self.packed.items()})

    @functools.cached_property
    def wildcard_names(self) -> frozenset[str]:
        return self.names - self.named_only

    @classmethod
    def of(cls, type_url: str, messages: Iterable[Message]) -> _TypeSet:
        by_name: dict[str, Message] = {}
        for message in messages:
            name = resource_name(message)
            if name in by_name:
                raise InconsistentSnapshotError([f"duplicate {type_url} resource {name!r}"])
            by_name[name] = message
        packed = {
            name: any_pb2.Any(type_url=type_url, value=msg.SerializeToString(deterministic=True))
            for name, msg in sorted(by_name.items())
        }
        digest = hashlib.sha256()
        for name, any_msg in packed.items():
            digest.update(name.encode())
            digest.update(b"\0")
            digest.update(any_msg.value)
            digest.update(b"\0")
        return cls(
            version=digest.hexdigest()[:16],
            messages=MappingProxyType(by_name),
            packed=MappingProxyType(packed),
            names=frozenset(by_name),
            named_only=frozenset(n for n, m in by_name.items()
                                 if isinstance(m, listener_pb2.Listener)
                                 and m.HasField("api_listener")),
        )


@dataclass(frozen=True)
class Snapshot:
    """Listeners, routes, clusters and endpoints for one node group, with a version per type.

    Immutable and safe to share between streams and tasks. :meth:`encode` memoises response
    bytes; the memo is the only mutable part and is only ever added to.
    """

    types: Mapping[str, _TypeSet]
    _encoded: dict[tuple[str, frozenset[str] | None], bytes] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(
        cls,
        *,
        listeners: Iterable[listener_pb2.Listener] = (),
        routes: Iterable[route_pb2.RouteConfiguration] = (),
        clusters: Iterable[cluster_pb2.Cluster] = (),
        endpoints: Iterable[endpoint_pb2.ClusterLoadAssignment] = (),
    ) -> Snapshot:
        return cls(
            types=MappingProxyType(
                {
                    type_urls.LISTENER: _TypeSet.of(type_urls.LISTENER, listeners),
                    type_urls.ROUTE: _TypeSet.of(type_urls.ROUTE, routes),
                    type_urls.CLUSTER: _TypeSet.of(type_urls.CLUSTER, clusters),
                    type_urls.ENDPOINT: _TypeSet.of(type_urls.ENDPOINT, endpoints),
                }
            )
        )

    def version(self, type_url: str) -> str:
        return self.types[type_url].version

    @property
    def versions(self) -> dict[str, str]:
        """Versions keyed by short type name (``lds``, ``rds``, ``cds``, ``eds``)."""
        return {type_urls.SHORT_NAMES[t]: ts.version for t, ts in self.types.items()}

    def resources(self, type_url: str) -> Mapping[str, Message]:
        return self.types[type_url].messages

    @functools.cached_property
    def types_present(self) -> frozenset[str]:
        """The types with at least one resource (what a complete client subscribes to)."""
        return frozenset(t for t, ts in self.types.items() if ts.messages)

    def names(self, type_url: str) -> frozenset[str]:
        return self.types[type_url].names

    def resource_versions(self, type_url: str) -> Mapping[str, str]:
        return self.types[type_url].resource_versions

    def wildcard_names(self, type_url: str) -> frozenset[str]:
        """What a wildcard subscriber gets: every resource but the named-only ones."""
        return self.types[type_url].wildcard_names

    def _memo(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        cached = self._encoded.get(key)
        if cached is None:
            if len(self._encoded) >= MAX_MEMOS:  # bounded: odd name sets cannot grow it
                self._encoded.pop(next(iter(self._encoded)))
            cached = self._encoded[key] = make()
        return cached

    def encode(self, type_url: str, names: frozenset[str] | None) -> bytes:
        """The DiscoveryResponse for ``type_url`` (every resource a wildcard subscriber
        gets when ``names`` is None), serialised without a nonce. Append a serialised
        ``DiscoveryResponse(nonce=...)``: concatenated protobuf messages merge, so the
        bytes are shared by all streams."""
        def make() -> bytes:
            type_set = self.types[type_url]
            wanted = names if names is not None else type_set.wildcard_names
            return discovery_pb2.DiscoveryResponse(
                version_info=type_set.version,
                type_url=type_url,
                resources=[a for n, a in type_set.packed.items() if n in wanted],
            ).SerializeToString()

        return self._memo((type_url, names), make)

    def encode_delta(self, type_url: str, names: frozenset[str],
                     removed: frozenset[str] = frozenset()) -> bytes:
        """An incremental response carrying ``names`` (with their per-resource versions)
        and ``removed``, without a nonce; shared like :meth:`encode`."""
        def make() -> bytes:
            type_set = self.types[type_url]
            versions = type_set.resource_versions
            return discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=type_set.version,
                type_url=type_url,
                resources=[discovery_pb2.Resource(name=n, version=versions[n], resource=a)
                           for n, a in type_set.packed.items() if n in names],
                removed_resources=sorted(removed),
            ).SerializeToString()

        return self._memo(("delta", type_url, names, removed), make)

    def consistent(self) -> None:
        """Raise :class:`InconsistentSnapshotError` unless every reference resolves:
        listeners name route tables present here, routes name clusters present here, and
        every EDS cluster has a ClusterLoadAssignment."""
        problems: list[str] = []
        clusters = self.resources(type_urls.CLUSTER)
        routes = self.resources(type_urls.ROUTE)
        endpoints = self.names(type_urls.ENDPOINT)
        for name, cluster in clusters.items():
            if cluster.type == cluster_pb2.Cluster.EDS:
                eds_name = cluster.eds_cluster_config.service_name or name
                if eds_name not in endpoints:
                    problems.append(f"cluster {name!r} has no endpoints {eds_name!r}")
        for name, listener in self.resources(type_urls.LISTENER).items():
            for route_name in _rds_names(listener):
                if route_name not in routes:
                    problems.append(f"listener {name!r} names unknown route table {route_name!r}")
        for name, table in routes.items():
            for cluster_name in _route_clusters(table):
                if cluster_name not in clusters:
                    problems.append(f"route table {name!r} names unknown cluster {cluster_name!r}")
        if problems:
            raise InconsistentSnapshotError(problems)


def _rds_names(listener: listener_pb2.Listener) -> Iterable[str]:
    """The route tables named by the listener's connection managers: its API listener's
    (gRPC clients) and its filter chains' (Envoy)."""
    configs = [listener.api_listener.api_listener,
               *(f.typed_config for chain in listener.filter_chains for f in chain.filters)]
    for config in configs:
        if config.type_url == _HCM_TYPE:
            hcm = hcm_pb2.HttpConnectionManager()
            config.Unpack(hcm)
            if hcm.HasField("rds"):
                yield hcm.rds.route_config_name


def _route_clusters(table: route_pb2.RouteConfiguration) -> Iterable[str]:
    for vhost in table.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                yield action.cluster
            for weighted in action.weighted_clusters.clusters:
                yield weighted.name
