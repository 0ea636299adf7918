"""The xDS resource builders, read back field by field for what each setting is for, and
every kind of resource accepted by a real Envoy (``--mode validate``) as static config."""

from __future__ import annotations

import json
import subprocess

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import json_format

from turnout.proxy import envoy_binary
from xds_server import resources as r


def _hcm(listener) -> hcm_pb2.HttpConnectionManager:  # type: ignore[no-untyped-def]
    manager = hcm_pb2.HttpConnectionManager()
    packed = (listener.api_listener.api_listener if listener.HasField("api_listener")
              else listener.filter_chains[0].filters[0].typed_config)
    assert packed.Unpack(manager)
    return manager


def test_the_access_log_streams_to_its_cluster_fast_with_grpc_status():
    log = r.grpc_access_log("turnout_als", flush_s=0.25)
    assert log.name == "envoy.access_loggers.http_grpc"
    config = als_pb2.HttpGrpcAccessLogConfig()
    assert log.typed_config.Unpack(config)
    common = config.common_config
    assert common.grpc_service.envoy_grpc.cluster_name == "turnout_als"
    assert common.log_name == "turnout"
    assert (common.buffer_flush_interval.seconds, common.buffer_flush_interval.nanos) == \
        (0, 250_000_000)
    assert common.buffer_size_bytes.value == 16384
    assert common.transport_api_version == 2  # V3
    # gRPC's status: in the trailers, or in the headers of a trailers-only answer.
    assert list(config.additional_response_headers_to_log) == ["grpc-status"]
    assert list(config.additional_response_trailers_to_log) == ["grpc-status"]
    assert r.grpc_access_log("x").typed_config.Unpack(config)
    flush = config.common_config.buffer_flush_interval
    assert (flush.seconds, flush.nanos) == (0, 100_000_000)  # default 0.1 s


def test_listeners_log_only_when_given_a_log_cluster():
    plain = r.http_listener("ingress", host="127.0.0.1", port=8080, route_config="rc")
    assert list(_hcm(plain).access_log) == []
    logged = r.http_listener("ingress", host="127.0.0.1", port=8080, route_config="rc",
                             access_log_cluster="als")
    assert [a.name for a in _hcm(logged).access_log] == ["envoy.access_loggers.http_grpc"]


def test_the_api_listener_is_an_addressless_connection_manager_on_rds():
    listener = r.api_listener("turnout", route_config="turnout_routes")
    assert listener.name == "turnout" and not listener.HasField("address")
    manager = _hcm(listener)
    assert manager.stat_prefix == "turnout"
    assert manager.rds.route_config_name == "turnout_routes"
    assert manager.rds.config_source.HasField("ads")
    assert manager.rds.config_source.resource_api_version == 2
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    assert manager.http_filters[0].typed_config.type_url.endswith(
        "envoy.extensions.filters.http.router.v3.Router")


def test_the_aggregate_cluster_fails_over_in_order_and_carries_the_retry_budget():
    resilience = r.Resilience(retry_budget_percent=25.0, min_retry_concurrency=7)
    cluster = r.aggregate_cluster("slot_green_ha", ["slot_green", "slot_blue"], resilience)
    assert cluster.name == "slot_green_ha"
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert cluster.cluster_type.name == "envoy.clusters.aggregate"
    config = aggregate_pb2.ClusterConfig()
    assert cluster.cluster_type.typed_config.Unpack(config)
    assert list(config.clusters) == ["slot_green", "slot_blue"]
    assert (cluster.connect_timeout.seconds, cluster.connect_timeout.nanos) == (1, 0)
    (threshold,) = cluster.circuit_breakers.thresholds
    assert threshold.retry_budget.budget_percent.value == 25.0
    assert threshold.retry_budget.min_retry_concurrency.value == 7
    bare = r.aggregate_cluster("a", ["b"])
    assert not bare.HasField("circuit_breakers")


def test_http_and_grpc_clusters_speak_their_protocols_over_eds():
    for builder, http2 in ((r.grpc_cluster, True), (r.http_cluster, False)):
        cluster = builder("c", connect_timeout_s=2.5)
        assert cluster.type == cluster_pb2.Cluster.EDS
        assert cluster.eds_cluster_config.eds_config.HasField("ads")
        assert (cluster.connect_timeout.seconds, cluster.connect_timeout.nanos) == \
            (2, 500_000_000)
        options = hpo_pb2.HttpProtocolOptions()
        assert cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
        explicit = options.explicit_http_config
        assert explicit.HasField("http2_protocol_options") is http2
        assert explicit.HasField("http_protocol_options") is not http2
        assert not cluster.health_checks and not cluster.HasField("outlier_detection")
        assert not cluster.ignore_health_on_host_removal
        assert builder("c").connect_timeout.seconds == 1  # default 1 s


def _static_bootstrap() -> dict:
    resilience = r.Resilience()
    listener = r.http_listener("ingress", host="127.0.0.1", port=18080, route_config="rc",
                               access_log_cluster="als")
    # Static config cannot take RDS from a server that is not there: inline the routes.
    manager = _hcm(listener)
    manager.ClearField("rds")
    manager.route_config.CopyFrom(r.route_configuration("rc", [
        r.weighted_route("split", r.route_match(),
                         [("slot_blue_ha", 90, [r.set_header("x-slot", "blue")]),
                          ("slot_green_ha", 10, [r.set_header("x-slot", "green")])],
                         retries=2)]))
    listener.filter_chains[0].filters[0].typed_config.Pack(manager)
    clusters = []
    for name in ("slot_blue", "slot_green"):
        cluster = r.grpc_cluster(name, resilience=resilience)
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.ClearField("eds_cluster_config")
        cluster.load_assignment.CopyFrom(r.load_assignment(
            name, [r.HostPort("127.0.0.1", 18001, True, 18002)]))
        clusters.append(cluster)
    clusters.append(r.aggregate_cluster("slot_blue_ha", ["slot_blue", "slot_green"], resilience))
    clusters.append(r.aggregate_cluster("slot_green_ha", ["slot_green", "slot_blue"],
                                        resilience))
    als = r.grpc_cluster("als")
    als.type = cluster_pb2.Cluster.STATIC
    als.ClearField("eds_cluster_config")
    als.load_assignment.CopyFrom(r.load_assignment("als", [r.HostPort("127.0.0.1", 18003)]))
    clusters.append(als)

    def as_json(message) -> dict:  # type: ignore[no-untyped-def]
        return json.loads(json_format.MessageToJson(message))

    return {"static_resources": {"listeners": [as_json(listener)],
                                 "clusters": [as_json(c) for c in clusters]}}


def test_real_envoy_accepts_every_kind_of_resource(tmp_path):
    path = tmp_path / "static.json"
    path.write_text(json.dumps(_static_bootstrap()))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path),
                             "--base-id", "7701"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr


def _retry_of(action) -> tuple:  # type: ignore[no-untyped-def]
    policy = action.retry_policy
    back_off = policy.retry_back_off
    return (policy.retry_on, policy.num_retries.value,
            (back_off.base_interval.seconds, back_off.base_interval.nanos),
            (back_off.max_interval.seconds, back_off.max_interval.nanos),
            [p.name for p in policy.retry_host_predicate],
            policy.host_selection_retry_max_attempts)


def test_a_pinned_route_goes_to_its_cluster_with_retries_and_headers():
    match = r.route_match(headers=[("x-turnout-slot", "green")])
    route = r.cluster_route("preview-green", match, "slot_green", retries=3,
                            idle_timeout_s=7.5,
                            response_headers=[r.set_header("x-turnout-served-by", "green")])
    assert route.name == "preview-green" and route.match == match
    assert route.route.cluster == "slot_green"
    # No limit on a whole stream (a long generation); one on idle time.
    assert route.route.HasField("timeout") and route.route.timeout.ToSeconds() == 0
    assert (route.route.idle_timeout.seconds, route.route.idle_timeout.nanos) == \
        (7, 500_000_000)
    assert _retry_of(route.route) == (
        r.RETRY_ON, 3, (0, 50_000_000), (0, 400_000_000),
        ["envoy.retry_host_predicates.previous_hosts"], 5)
    (header,) = route.response_headers_to_add
    assert (header.header.key, header.header.value) == ("x-turnout-served-by", "green")
    defaults = r.cluster_route("p", match, "c")
    assert defaults.route.retry_policy.num_retries.value == 5
    assert defaults.route.idle_timeout.seconds == 60 and not defaults.response_headers_to_add
    assert defaults.route.HasField("timeout") and defaults.route.timeout.ToSeconds() == 0


def test_a_weighted_route_names_every_cluster_even_at_zero():
    route = r.weighted_route("split", r.route_match(grpc=True),
                             [("slot_blue_ha", 100, [r.set_header("x-slot", "blue")]),
                              ("slot_green_ha", 0, [])], retries=2, idle_timeout_s=3)
    assert route.match.HasField("grpc") and route.match.prefix == "/"
    weighted = route.route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in weighted] == [("slot_blue_ha", 100),
                                                           ("slot_green_ha", 0)]
    assert weighted[0].response_headers_to_add[0].header.value == "blue"
    assert not weighted[1].response_headers_to_add
    assert route.route.retry_policy.num_retries.value == 2
    assert route.route.idle_timeout.seconds == 3 and route.route.timeout.ToSeconds() == 0
    assert route.route.HasField("timeout")
    with pytest.raises(ValueError, match=r"^weights must sum to more than 0$"):
        r.weighted_route("split", r.route_match(), [("a", 0, []), ("b", 0, [])])


def test_a_route_table_matches_every_domain_and_strips_what_it_is_told():
    route = r.cluster_route("p", r.route_match(), "c")
    table = r.route_configuration("rc", [route], remove_request_headers=["x-key"])
    assert table.name == "rc"
    (host,) = table.virtual_hosts
    assert (host.name, list(host.domains), list(host.routes)) == ("models", ["*"], [route])
    assert table.validate_clusters.value is True
    assert list(table.request_headers_to_remove) == ["x-key"]
    assert r.route_configuration("rc", [], validate_clusters=False).validate_clusters.value \
        is False


def test_headers_are_overwritten_not_appended():
    header = r.set_header("x-served-by", "blue")
    assert (header.header.key, header.header.value) == ("x-served-by", "blue")
    assert header.append_action == header.OVERWRITE_IF_EXISTS_OR_ADD


def test_resilient_clusters_check_health_eject_and_budget_retries():
    resilience = r.Resilience(health_path="/h", interval_s=0.5, timeout_s=0.25,
                              unhealthy_threshold=2, healthy_threshold=3,
                              local_failures_to_eject=4, ejection_s=6.0,
                              retry_budget_percent=30.0, min_retry_concurrency=9)
    for builder in (r.grpc_cluster, r.http_cluster):
        cluster = builder("c", resilience=resilience)
        (check,) = cluster.health_checks
        # A server EDS drops leaves at once though it still passes health checks.
        assert cluster.ignore_health_on_host_removal is True
        assert check.http_health_check.path == "/h"
        assert (check.interval.nanos, check.timeout.nanos) == (500_000_000, 250_000_000)
        assert check.no_traffic_interval.nanos == 500_000_000
        assert check.no_traffic_healthy_interval.seconds == 1  # at least 1 s
        assert (check.unhealthy_threshold.value, check.healthy_threshold.value) == (2, 3)
        outlier = cluster.outlier_detection
        assert outlier.split_external_local_origin_errors
        assert outlier.consecutive_local_origin_failure.value == 4
        assert outlier.base_ejection_time.seconds == 6
        assert outlier.max_ejection_percent.value == 100


def test_endpoints_carry_health_their_health_port_and_a_weighted_locality():
    assignment = r.load_assignment("slot_blue", [r.HostPort("127.0.0.1", 8001, True, 8002),
                                                 r.HostPort("127.0.0.1", 8003, False)])
    assert assignment.cluster_name == "slot_blue"
    (locality,) = assignment.endpoints
    # gRPC's xDS client needs a locality and skips one without a weight.
    assert locality.HasField("locality") and locality.load_balancing_weight.value == 1
    first, second = locality.lb_endpoints
    assert first.endpoint.address.socket_address.port_value == 8001
    assert first.endpoint.health_check_config.port_value == 8002
    assert first.health_status == 1  # HEALTHY
    assert not second.endpoint.HasField("health_check_config")
    assert second.health_status == 2  # UNHEALTHY


def test_the_ingress_listener_serves_grpc_and_http_with_envoys_stats():
    listener = r.http_listener("ingress", host="127.0.0.1", port=8080, route_config="rc",
                               stat_prefix="edge")
    address = listener.address.socket_address
    assert (listener.name, address.address, address.port_value) == ("ingress", "127.0.0.1",
                                                                     8080)
    (chain,) = listener.filter_chains
    assert chain.filters[0].name == "envoy.filters.network.http_connection_manager"
    manager = _hcm(listener)
    assert manager.stat_prefix == "edge"
    assert manager.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert manager.HasField("http2_protocol_options")
    assert manager.generate_request_id.value is False and manager.HasField("generate_request_id")
    assert manager.rds.route_config_name == "rc" and manager.rds.config_source.HasField("ads")
    (router,) = manager.http_filters
    assert router.name == "envoy.filters.http.router"
    from envoy.extensions.filters.http.router.v3 import router_pb2

    config = router_pb2.Router()
    assert router.typed_config.Unpack(config)
    assert config.suppress_envoy_headers and not config.HasField("dynamic_stats")
    assert _hcm(r.http_listener("i", host="h", port=1, route_config="rc")).stat_prefix == \
        "ingress"


def test_outlier_detection_ejects_on_local_and_gateway_failures_every_second():
    outlier = r.grpc_cluster("c", resilience=r.Resilience()).outlier_detection
    assert outlier.enforcing_consecutive_local_origin_failure.value == 100
    assert outlier.consecutive_gateway_failure.value == 3
    assert outlier.enforcing_consecutive_gateway_failure.value == 100
    assert (outlier.interval.seconds, outlier.interval.nanos) == (1, 0)


def test_header_matches_compare_exactly():
    match = r.route_match(headers=[("x-turnout-slot", "green"), ("x-key", "k1")])
    assert match.prefix == "/" and not match.HasField("grpc")
    assert [(h.name, h.string_match.exact) for h in match.headers] == [
        ("x-turnout-slot", "green"), ("x-key", "k1")]


def test_weighted_route_defaults_and_the_smallest_split():
    route = r.weighted_route("split", r.route_match(), [("a", 1, []), ("b", 0, [])])
    assert route.name == "split"
    assert route.route.retry_policy.num_retries.value == 5
    assert (route.route.idle_timeout.seconds, route.route.idle_timeout.nanos) == (60, 0)
    assert route.route.HasField("timeout") and route.route.timeout.ToSeconds() == 0
    priority = route.route.retry_policy.retry_priority
    assert priority.name == "envoy.retry_priorities.previous_priorities"
    from envoy.extensions.retry.priority.previous_priorities.v3 import (
        previous_priorities_config_pb2,
    )

    config = previous_priorities_config_pb2.PreviousPrioritiesConfig()
    assert priority.typed_config.Unpack(config) and config.update_frequency == 2


def test_durations_keep_their_nanoseconds():
    from xds_server.resources import _duration

    assert (_duration(0.999999999).seconds, _duration(0.999999999).nanos) == (0, 999_999_999)
    assert (_duration(2.5).seconds, _duration(2.5).nanos) == (2, 500_000_000)


def test_the_panic_threshold_is_what_the_resilience_says():
    cluster = r.grpc_cluster("c", resilience=r.Resilience(panic_threshold=25.0))
    assert cluster.common_lb_config.healthy_panic_threshold.value == 25.0
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
