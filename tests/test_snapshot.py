"""Snapshot values: versions, consistency, shared encoding."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from tests.xds_fakes import snapshot
from turnout.topology import split_routes
from xds_server import InconsistentSnapshotError, Snapshot
from xds_server import type_urls as t
from xds_server.resources import grpc_cluster


def test_versions_are_content_digests():
    assert snapshot(10).versions == snapshot(10).versions
    assert snapshot(10).version(t.ROUTE) != snapshot(11).version(t.ROUTE)


def test_health_change_is_eds_only():
    before, after = snapshot(10).versions, snapshot(10, green_healthy=False).versions
    assert {k for k in before if before[k] != after[k]} == {"eds"}


def test_consistent_rejects_route_to_unknown_cluster():
    good = snapshot(10)
    purple = split_routes(
        "ingress_routes", clusters={"blue": "slot_blue", "purple": "slot_purple"},
        weights={"blue": 50, "purple": 50},
    )
    bad = Snapshot.build(
        listeners=good.resources(t.LISTENER).values(),
        routes=[purple],
        clusters=good.resources(t.CLUSTER).values(),
        endpoints=good.resources(t.ENDPOINT).values(),
    )
    with pytest.raises(InconsistentSnapshotError, match="slot_purple"):
        bad.consistent()


def test_consistent_rejects_cluster_without_endpoints_and_listener_without_routes():
    good = snapshot(0)
    bad = Snapshot.build(
        listeners=good.resources(t.LISTENER).values(),
        clusters=[*good.resources(t.CLUSTER).values(), grpc_cluster("slot_extra")],
        endpoints=good.resources(t.ENDPOINT).values(),
    )
    with pytest.raises(InconsistentSnapshotError) as info:
        bad.consistent()
    text = str(info.value)
    assert "slot_extra" in text
    assert "ingress_routes" in text


def test_duplicate_names_are_refused():
    with pytest.raises(InconsistentSnapshotError, match="duplicate"):
        Snapshot.build(clusters=[grpc_cluster("a"), grpc_cluster("a")])


def test_encoding_is_shared_and_a_nonce_can_be_appended():
    snap = snapshot(10)
    first = snap.encode(t.ROUTE, frozenset({"ingress_routes"}))
    assert snap.encode(t.ROUTE, frozenset({"ingress_routes"})) is first
    wire = first + discovery_pb2.DiscoveryResponse(nonce="42").SerializeToString()
    parsed = discovery_pb2.DiscoveryResponse.FromString(wire)
    assert parsed.nonce == "42"
    assert parsed.version_info == snap.version(t.ROUTE)
    assert len(parsed.resources) == 1


def test_weights_must_sum_positive():
    with pytest.raises(ValueError):
        split_routes("r", clusters={"blue": "slot_blue"}, weights={"blue": 0})


def test_every_packed_resource_names_its_type():
    from envoy.service.discovery.v3 import discovery_pb2

    from tests.xds_fakes import snapshot as topology_snapshot
    from xds_server import type_urls as urls

    built = topology_snapshot(10)
    for type_url in urls.ALL_TYPES:
        response = discovery_pb2.DiscoveryResponse.FromString(built.encode(type_url, None))
        assert response.resources, type_url
        assert {r.type_url for r in response.resources} == {type_url}


def test_consistency_follows_api_listeners_and_skips_only_actionless_routes():
    from envoy.config.route.v3 import route_components_pb2 as rc

    from xds_server import InconsistentSnapshotError
    from xds_server.resources import api_listener, route_configuration, route_match

    with pytest.raises(InconsistentSnapshotError, match="unknown route table 'absent'"):
        Snapshot.build(listeners=[api_listener("turnout", route_config="absent")]).consistent()
    table = route_configuration("t", [
        rc.Route(name="answer", match=route_match(),
                 direct_response=rc.DirectResponseAction(status=200)),
        rc.Route(name="onward", match=route_match(),
                 route=rc.RouteAction(cluster="nowhere")),
    ])
    with pytest.raises(InconsistentSnapshotError, match="unknown cluster 'nowhere'"):
        Snapshot.build(routes=[table]).consistent()


def test_the_version_does_not_depend_on_the_order_maps_were_filled_in():
    """Resources are serialised deterministically: the same content gives the same
    version however its maps were built (no spurious pushes)."""
    from envoy.config.cluster.v3 import cluster_pb2
    from google.protobuf import struct_pb2

    from xds_server.snapshot import Snapshot

    def cluster(order: list[str]) -> cluster_pb2.Cluster:
        c = cluster_pb2.Cluster(name="c")
        for key in order:
            c.metadata.filter_metadata[key].CopyFrom(
                struct_pb2.Struct(fields={"v": struct_pb2.Value(string_value=key)}))
        return c

    versions = set()
    for order in (["a", "b", "c", "d", "e"], ["e", "d", "c", "b", "a"], ["c", "a", "e", "b", "d"]):
        snap = Snapshot.build(listeners=[], routes=[], clusters=[cluster(order)], endpoints=[])
        versions.add(snap.version("type.googleapis.com/envoy.config.cluster.v3.Cluster"))
    assert len(versions) == 1


def test_every_route_is_bounded_by_idle_time_not_by_duration(tmp_path):
    """A generation may stream for minutes: no route limits a request's whole duration;
    the stack's stream_idle_timeout_s (checked when the config is read) ends one that
    sends nothing either way."""
    from triton_slots.slot import Slot
    from turnout.config import ControlPlaneConfig
    from turnout.errors import ConfigError
    from turnout.tokens import Role, mint
    from turnout.topology import build_snapshot
    from turnout.weights import Weights

    built = build_snapshot(ingress_host="127.0.0.1", ingress_port=1, slots={}, health={},
                           weights=Weights(), grpc_target="t", idle_timeout_s=900)
    routes = [r for config in built.resources(t.ROUTE).values() for host in config.virtual_hosts
              for r in host.routes]
    assert len(routes) == 9  # (2 previews + split) x (gRPC, HTTP, proxyless gRPC)
    assert {(r.route.timeout.ToSeconds(), r.route.idle_timeout.ToSeconds(),
             r.route.HasField("timeout")) for r in routes} == {(0, 900, True)}
    admin, _ = mint("a", Role.ADMIN)
    assert ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                              slots={"blue": Slot("blue")}).stream_idle_timeout_s == 60.0
    for bad in (0, 0.5, 3601, "60", True, None):
        with pytest.raises(ConfigError, match=r"^stream_idle_timeout_s must be a number of "
                                              r"seconds in 1\.\.3600, got "):
            ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                               stream_idle_timeout_s=bad)


def test_long_lived_grpc_streams_are_bounded_by_age_on_the_split_only(tmp_path):
    """With a stream age bound, gRPC ModelStreamInfer streams taking the split (one stream,
    many requests) get Envoy's max_stream_duration on a route of their own, placed before
    the gRPC split (first match wins) with the same weights; unary calls, HTTP and pinned
    (preview) streams get none. Without a bound there is no such route."""
    from triton_slots.routing import STREAM_PATH
    from triton_slots.slot import Slot
    from turnout.config import ControlPlaneConfig
    from turnout.errors import ConfigError
    from turnout.tokens import Role, mint
    from turnout.topology import build_snapshot
    from turnout.weights import Weights

    def tables(**bound):
        built = build_snapshot(ingress_host="127.0.0.1", ingress_port=1, slots={}, health={},
                               weights=Weights.with_green(30), grpc_target="t", **bound)
        return {name: list(config.virtual_hosts[0].routes)
                for name, config in built.resources(t.ROUTE).items()}

    for name, routes in tables(stream_max_age_s=45).items():
        bounded = [r for r in routes if r.route.HasField("max_stream_duration")]
        assert [r.name for r in bounded] == ["split-streams"], name
        stream, split = bounded[0], next(r for r in routes if r.name == "split")
        assert routes.index(stream) == routes.index(split) - 1
        assert stream.match.path == STREAM_PATH
        assert stream.route.max_stream_duration.max_stream_duration.ToSeconds() == 45
        assert stream.route.weighted_clusters == split.route.weighted_clusters
        assert [(c.name, c.weight.value) for c in stream.route.weighted_clusters.clusters] \
            == [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters]
        assert stream.route.idle_timeout == split.route.idle_timeout
    for routes in tables().values():
        assert not any(r.route.HasField("max_stream_duration") for r in routes)
        assert "split-streams" not in [r.name for r in routes]

    admin, _ = mint("a", Role.ADMIN)
    assert ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                              slots={"blue": Slot("blue")}).stream_max_age_s == 120.0
    for good in (0, 2, 86400):
        ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                           stream_max_age_s=good)
    for bad in (1, 1.99, -1, 86401, "60", True, None):
        with pytest.raises(ConfigError, match=r"^stream_max_age_s must be 0 \(no bound\) or a "
                                              r"number of seconds in 2\.\.86400, got "):
            ControlPlaneConfig(state_dir=tmp_path, tokens=(admin,), ingress_port=1,
                               stream_max_age_s=bad)


def test_a_shadow_copies_a_sampled_share_of_inference_to_the_slots_own_cluster():
    """With a shadow, each protocol's table starts with the copy route (only the key in
    x-turnout-shadow reaches it: the candidate's pinned cluster, marked ``copy``, no
    retries), and puts before the split a sampled route for inference calls only that
    takes the same split, marks ``live`` and mirrors to Envoy's own ingress with the key.
    The key header never reaches a server; the listener records with the tap filter and
    gives requests an id. Without a shadow: none of it, and no tap unless asked."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    from triton_slots.routing import HTTP_INFER_REGEX, INFER_PATH, SHADOW_HEADER, STREAM_PATH
    from turnout.topology import Shadow, build_snapshot
    from turnout.weights import Weights
    from xds_server.mirror import SELF_CLUSTER

    def build(**options):
        return build_snapshot(ingress_host="0.0.0.0", ingress_port=8000, slots={}, health={},
                              weights=Weights.with_green(20), grpc_target="t", **options)

    with pytest.raises(ValueError, match="needs the tap filter"):
        build(shadow=Shadow("green", 12.5, "k" * 20))
    built = build(shadow=Shadow("green", 12.5, "k" * 20), tap=True)
    ingress = built.resources(t.ROUTE)["ingress_routes"]
    routes = list(ingress.virtual_hosts[0].routes)
    names = [r.name for r in routes]
    assert names[0] == "shadow-copy" and names[names.index("split") - 1] == "split-shadow"
    assert "shadow-copy-http" in names and "split-shadow-http" in names
    assert names.index("shadow-copy-http") < names.index("preview-blue-http")
    copy = routes[0]
    assert copy.route.cluster == "slot_green_preview"
    assert copy.route.retry_policy.num_retries.value == 0  # a copy is never sent twice
    assert [(h.name, h.string_match.exact) for h in copy.match.headers] == [
        (SHADOW_HEADER, "k" * 20)]
    assert {(h.header.key, h.header.value) for h in copy.response_headers_to_add} == {
        ("x-turnout-served-by", "green"), (SHADOW_HEADER, "copy")}
    sampled = routes[names.index("split-shadow")]
    split = routes[names.index("split")]
    assert sampled.match.path == INFER_PATH and sampled.match.HasField("grpc")
    fraction = sampled.match.runtime_fraction.default_value
    assert (fraction.numerator, fraction.denominator) == (125_000, 2)  # MILLION
    assert sampled.route.weighted_clusters == split.route.weighted_clusters
    [mirror] = sampled.route.request_mirror_policies
    assert mirror.cluster == SELF_CLUSTER
    assert [(m.append.header.key, m.append.header.value)
            for m in mirror.request_headers_mutations] == [(SHADOW_HEADER, "k" * 20)]
    assert [(h.header.key, h.header.value) for h in sampled.response_headers_to_add] == [
        (SHADOW_HEADER, "live")]
    http_sampled = routes[names.index("split-shadow-http")]
    assert http_sampled.match.safe_regex.regex == HTTP_INFER_REGEX
    streams = routes[names.index("split-shadow-streams")]  # copied whole, age-bounded
    assert streams.match.path == STREAM_PATH and streams.match.runtime_fraction == \
        sampled.match.runtime_fraction and streams.route.request_mirror_policies
    assert not streams.route.HasField("max_stream_duration")  # no bound asked here
    bounded = build(shadow=Shadow("green", 12.5, "k" * 20), tap=True, stream_max_age_s=30)
    bounded_names = [r.name for r in bounded.resources(t.ROUTE)["ingress_routes"]
                     .virtual_hosts[0].routes]
    assert bounded_names.index("split-shadow-streams") < bounded_names.index("split-streams")
    bounded_streams = bounded.resources(t.ROUTE)["ingress_routes"].virtual_hosts[0].routes[
        bounded_names.index("split-shadow-streams")]
    assert bounded_streams.route.max_stream_duration.max_stream_duration.seconds == 30
    assert not split.route.request_mirror_policies  # the rest are never copied
    assert SHADOW_HEADER in ingress.request_headers_to_remove
    proxyless = built.resources(t.ROUTE)["proxyless_routes"]
    assert not any("shadow" in r.name for r in proxyless.virtual_hosts[0].routes)
    [self_cluster] = [c for c in built.resources(t.CLUSTER).values() if c.name == SELF_CLUSTER]
    address = self_cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1", 8000)

    def manager(snapshot) -> hcm_pb2.HttpConnectionManager:
        listener = snapshot.resources(t.LISTENER)["ingress"]
        config = hcm_pb2.HttpConnectionManager()
        listener.filter_chains[0].filters[0].typed_config.Unpack(config)
        return config

    tapped = manager(built)
    assert [f.name for f in tapped.http_filters][-2:] == ["envoy.filters.http.tap",
                                                         "envoy.filters.http.router"]
    assert tapped.generate_request_id.value is True
    plain = build()
    assert "envoy.filters.http.tap" not in [f.name for f in manager(plain).http_filters]
    assert manager(plain).generate_request_id.value is False
    assert SELF_CLUSTER not in [c.name for c in plain.resources(t.CLUSTER).values()]
    assert not any("shadow" in r.name for r in
                   plain.resources(t.ROUTE)["ingress_routes"].virtual_hosts[0].routes)


def test_eds_never_marks_every_server_of_a_slot_unhealthy():
    """The control plane's probes decide EDS health, except for a slot none of whose
    servers answers them (a control plane cut from them): Envoy's own checks decide."""
    from triton_slots.slot import Endpoint, Slot
    from turnout.topology import eds_health

    a, b, c, d = (Endpoint(f"10.0.0.{i}", 8000, 8001, 8002) for i in range(1, 5))
    slots = {"blue": Slot("blue", (a, b)), "green": Slot("green", (c, d))}
    one_down = {a: True, b: False, c: True, d: True}
    assert eds_health(slots, one_down) == one_down  # the probes' verdict stands
    slot_down = {a: False, b: False, c: True, d: False}
    assert eds_health(slots, slot_down) == {a: True, b: True, c: True, d: False}
    assert eds_health(slots, {}) == {a: True, b: True, c: True, d: True}
    assert eds_health({"blue": Slot("blue")}, {a: False}) == {a: False}  # no servers
