"""The Envoy resources of shadow traffic, field by field (their behaviour on a real Envoy:
tests/test_integration_shadow.py)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.tap.v3 import tap_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.v3 import percent_pb2

from xds_server.mirror import SELF_CLUSTER, mirror_policy, sampled, self_cluster, tap_filter


def test_the_tap_filter_is_admin_controlled_and_times_both_sides():
    http_filter = tap_filter("tap-id")
    assert http_filter.name == "envoy.filters.http.tap"
    tap = tap_pb2.Tap()
    assert http_filter.typed_config.Unpack(tap)
    assert tap.common_config.admin_config.config_id == "tap-id"
    assert tap.record_headers_received_time is True
    assert not tap.common_config.HasField("static_config")


def test_the_self_cluster_speaks_http2_to_this_envoys_ingress():
    cluster = self_cluster("10.0.0.5", 8080)
    assert cluster.name == SELF_CLUSTER == "turnout_ingress_self"
    assert cluster.type == cluster_pb2.Cluster.STATIC
    assert cluster.connect_timeout.seconds == 1 and cluster.connect_timeout.nanos == 0
    assert cluster.load_assignment.cluster_name == SELF_CLUSTER
    [locality] = cluster.load_assignment.endpoints
    [endpoint] = locality.lb_endpoints
    socket = endpoint.endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("10.0.0.5", 8080)
    options = hpo_pb2.HttpProtocolOptions()
    assert list(cluster.typed_extension_protocol_options) == [
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_a_sampled_match_keeps_the_match_and_draws_the_share():
    match = rc_pb2.RouteMatch(path="/p")
    match.grpc.SetInParent()
    drawn = sampled(match, 2.5)
    assert drawn.path == "/p" and drawn.HasField("grpc")
    assert not match.HasField("runtime_fraction")  # the original is untouched
    fraction = drawn.runtime_fraction
    assert fraction.runtime_key == "turnout.shadow_percent"
    assert (fraction.default_value.numerator, fraction.default_value.denominator) == (
        25_000, percent_pb2.FractionalPercent.MILLION)
    assert sampled(match, 100).runtime_fraction.default_value.numerator == 1_000_000
    assert sampled(match, 0.0001).runtime_fraction.default_value.numerator == 1


def test_the_mirror_marks_only_the_copy():
    policy = mirror_policy("x-mark", "secret-key")
    assert policy.cluster == SELF_CLUSTER
    assert not policy.HasField("runtime_fraction")  # every request of its route
    [mutation] = policy.request_headers_mutations
    assert (mutation.append.header.key, mutation.append.header.value) == ("x-mark",
                                                                          "secret-key")
    assert mutation.append.append_action == \
        base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
