"""Builders of the Envoy resources Turnout serves. Pure functions returning protobufs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import http_pb2 as http_types_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from xds_server.mirror import tap_filter

_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#: Retried on another host: the request never reached a model, or the server died under
#: it (``reset``). Inference is idempotent, so a reset request is safe to send again.
RETRY_ON = "connect-failure,refused-stream,unavailable,reset"


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


@dataclass(frozen=True)
class HostPort:
    """One upstream endpoint as EDS sees it; ``health_port`` is where Envoy's active
    health check goes (``None``: the serving port)."""

    host: str
    port: int
    healthy: bool = True
    health_port: int | None = None


@dataclass(frozen=True)
class Resilience:
    """How a cluster survives dying servers: active HTTP health checks (``path`` on each
    host's health port), outlier detection on local-origin failures (connect failures,
    resets), and a retry budget instead of Envoy's default of 3 concurrent retries.
    With ``panic_threshold`` 0 a cluster whose hosts are all unhealthy sends nothing to
    them (an aggregate cluster then fails over to its next cluster)."""

    # Liveness: a server that is loading a model is briefly not "ready" (Triton's strict
    # readiness) but must not be taken out; readiness is the control plane's probe (EDS).
    health_path: str = "/v2/health/live"
    interval_s: float = 0.5
    timeout_s: float = 0.25
    unhealthy_threshold: int = 1
    healthy_threshold: int = 1
    local_failures_to_eject: int = 1
    ejection_s: float = 2.0
    retry_budget_percent: float = 50.0
    min_retry_concurrency: int = 64
    panic_threshold: float = 0.0


def grpc_cluster(name: str, *, connect_timeout_s: float = 1.0,
                 resilience: Resilience | None = None) -> cluster_pb2.Cluster:
    """An EDS cluster fed over ADS, speaking HTTP/2 (gRPC) to its upstreams."""
    http2 = hpo_pb2.HttpProtocolOptions(
        explicit_http_config=hpo_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return _eds_cluster(name, http2, connect_timeout_s, resilience)


def http_cluster(name: str, *, connect_timeout_s: float = 1.0,
                 resilience: Resilience | None = None) -> cluster_pb2.Cluster:
    """An EDS cluster fed over ADS, speaking HTTP/1.1 to its upstreams (Triton's HTTP/REST
    port). Clients may use HTTP/1.1 or HTTP/2 towards Envoy either way."""
    http1 = hpo_pb2.HttpProtocolOptions(
        explicit_http_config=hpo_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions()
        )
    )
    return _eds_cluster(name, http1, connect_timeout_s, resilience)


def aggregate_cluster(name: str, clusters: Sequence[str],
                      resilience: Resilience | None = None) -> cluster_pb2.Cluster:
    """A cluster that sends to the first of ``clusters`` with healthy hosts (priority
    failover inside Envoy, no control plane involved). Retries of requests routed here
    are limited by this cluster's circuit breakers, so it carries the retry budget too."""
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=_duration(1.0),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name="envoy.clusters.aggregate",
            typed_config=_any(aggregate_pb2.ClusterConfig(clusters=list(clusters))),
        ),
    )
    if resilience is not None:
        cluster.circuit_breakers.CopyFrom(_retry_budget(resilience))
    return cluster


def _retry_budget(r: Resilience) -> circuit_breaker_pb2.CircuitBreakers:
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            retry_budget=circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
                budget_percent=percent_pb2.Percent(value=r.retry_budget_percent),
                min_retry_concurrency=wrappers_pb2.UInt32Value(value=r.min_retry_concurrency),
            ))])


def _resilient(cluster: cluster_pb2.Cluster, r: Resilience) -> None:
    # A server EDS no longer lists leaves at once, even while it still passes the active
    # health check (Envoy's default keeps it until that fails): slots change while serving.
    cluster.ignore_health_on_host_removal = True
    cluster.health_checks.append(health_check_pb2.HealthCheck(
        timeout=_duration(r.timeout_s), interval=_duration(r.interval_s),
        no_traffic_interval=_duration(r.interval_s),
        no_traffic_healthy_interval=_duration(max(r.interval_s, 1.0)),
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=r.unhealthy_threshold),
        healthy_threshold=wrappers_pb2.UInt32Value(value=r.healthy_threshold),
        http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(
            path=r.health_path, codec_client_type=http_types_pb2.HTTP1),
    ))
    cluster.outlier_detection.CopyFrom(outlier_detection_pb2.OutlierDetection(
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=wrappers_pb2.UInt32Value(
            value=r.local_failures_to_eject),
        enforcing_consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=100),
        consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=3),
        enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
        interval=_duration(1.0), base_ejection_time=_duration(r.ejection_s),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=100),
    ))
    cluster.circuit_breakers.CopyFrom(_retry_budget(r))
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=r.panic_threshold))


def _eds_cluster(name: str, options: hpo_pb2.HttpProtocolOptions, connect_timeout_s: float,
                 resilience: Resilience | None = None) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        connect_timeout=_duration(connect_timeout_s),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        typed_extension_protocol_options={_HTTP_OPTIONS_KEY: _any(options)},
    )
    if resilience is not None:
        _resilient(cluster, resilience)
    return cluster


def load_assignment(
    cluster: str, endpoints: Iterable[HostPort]
) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of ``cluster`` with their health (unhealthy hosts get no traffic)."""
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=e.host, port_value=e.port)
                ),
                health_check_config=endpoint_components_pb2.Endpoint.HealthCheckConfig(
                    port_value=e.health_port) if e.health_port else None,
            ),
            health_status=health_check_pb2.HEALTHY if e.healthy else health_check_pb2.UNHEALTHY,
        )
        for e in endpoints
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster,
        # gRPC's xDS client needs a locality and skips one without a weight; Envoy
        # ignores both here.
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(), lb_endpoints=lb_endpoints,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1))],
    )


def grpc_access_log(cluster: str, *, flush_s: float = 0.1) -> accesslog_pb2.AccessLog:
    """Every request streamed to the gRPC access-log service behind ``cluster`` (a static
    cluster of the bootstrap), flushed every ``flush_s`` seconds, with gRPC's status."""
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name="turnout",
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)),
            transport_api_version=config_source_pb2.ApiVersion.V3,
            buffer_flush_interval=_duration(flush_s),
            buffer_size_bytes=wrappers_pb2.UInt32Value(value=16384),
            # A gRPC call's message counts (a stream's responses), from grpc_stats_filter.
            filter_state_objects_to_log=[GRPC_STATS_FILTER],
        ),
        additional_response_headers_to_log=["grpc-status"],
        additional_response_trailers_to_log=["grpc-status"],
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc",
                                   typed_config=_any(config))


GRPC_STATS_FILTER = "envoy.filters.http.grpc_stats"


def grpc_stats_filter() -> hcm_pb2.HttpFilter:
    """Envoy's gRPC statistics filter, leaving each call's request and response message
    counts as filter state (what the access log reports of a stream), with no statistics
    of its own per method."""
    return hcm_pb2.HttpFilter(name=GRPC_STATS_FILTER, typed_config=_any(
        grpc_stats_pb2.FilterConfig(emit_filter_state=True,
                                    stats_for_all_methods=wrappers_pb2.BoolValue(value=False))))


def http_listener(
    name: str, *, host: str, port: int, route_config: str, stat_prefix: str = "ingress",
    access_log_cluster: str | None = None, tap: str | None = None,
) -> listener_pb2.Listener:
    """A listener whose connection manager takes its routes from RDS (over ADS); with
    ``access_log_cluster``, every request is also streamed to the access-log service there.
    ``tap``: Envoy's tap filter under admin control with that config id (shadow traffic:
    ``xds_server.mirror``) and a request id on every request (``x-request-id``, which
    pairs the two answers).

    The codec is AUTO, so gRPC clients (HTTP/2 with prior knowledge) and HTTP/1.1 both work.
    """
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_config),
        http_filters=[
            *([grpc_stats_filter()] if access_log_cluster else []),
            *([tap_filter(tap)] if tap else []),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router",
                # dynamic_stats must stay on: the gates read each slot cluster's
                # upstream_rq_time histogram and response-code counters from it.
                typed_config=_any(router_pb2.Router(suppress_envoy_headers=True)),
            )
        ],
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
        generate_request_id=wrappers_pb2.BoolValue(value=bool(tap)),
        access_log=[grpc_access_log(access_log_cluster)] if access_log_cluster else [],
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=host, port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_any(manager),
                    )
                ]
            )
        ],
    )


def api_listener(name: str, *, route_config: str) -> listener_pb2.Listener:
    """What gRPC's xDS client resolves for the target ``xds:///<name>``: a listener with
    no address whose ``api_listener`` is a connection manager taking routes from RDS.
    Sent only to clients that ask for it by name (Envoy, subscribing to every listener,
    never sees it)."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_config),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=_any(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_any(manager)))


def _retry_policy(retries: int) -> rc_pb2.RetryPolicy:
    """Retries on other hosts with exponential back-off (50 ms doubling, at most 400 ms),
    long enough in total (~1.2 s for 5) for health checks and outlier detection to take a
    dead server, or a dead slot, out of the choice."""
    return rc_pb2.RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=retries),
        retry_back_off=rc_pb2.RetryPolicy.RetryBackOff(
            base_interval=_duration(0.05), max_interval=_duration(0.4)),
        retry_host_predicate=[
            rc_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=_any(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
        # With a failover (aggregate) cluster each child is a priority: after two attempts
        # in one, retries go to the next (a dead slot is left before health checks see it).
        retry_priority=rc_pb2.RetryPolicy.RetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=_any(previous_priorities_config_pb2.PreviousPrioritiesConfig(
                update_frequency=2)),
        ),
    )


def set_header(key: str, value: str) -> base_pb2.HeaderValueOption:
    """A response header written (or overwritten) by Envoy."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def route_match(*, grpc: bool | None = None, headers: Iterable[tuple[str, str]] = (),
                path: str | None = None, path_regex: str | None = None) -> rc_pb2.RouteMatch:
    """Match every path (``path``: only that one; ``path_regex``: paths matching that
    RE2); ``grpc=True`` only gRPC requests (content-type application/grpc); ``headers``
    only requests where each header equals its value."""
    if path:
        match = rc_pb2.RouteMatch(path=path)
    elif path_regex:
        match = rc_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=path_regex))
    else:
        match = rc_pb2.RouteMatch(prefix="/")
    if grpc:
        match.grpc.SetInParent()
    for name, value in headers:
        match.headers.append(rc_pb2.HeaderMatcher(
            name=name, string_match=string_pb2.StringMatcher(exact=value)))
    return match


def cluster_route(name: str, match: rc_pb2.RouteMatch, cluster: str, *,
                  response_headers: Iterable[base_pb2.HeaderValueOption] = (),
                  retries: int = 5, idle_timeout_s: float = 60.0) -> rc_pb2.Route:
    """A route to one cluster, with retries to other hosts on connection-level failures
    (Envoy retries only before a response has begun: a stream that answered is never
    replayed). See :func:`_timeouts`."""
    return rc_pb2.Route(
        name=name, match=match,
        route=rc_pb2.RouteAction(cluster=cluster, retry_policy=_retry_policy(retries),
                                 **_timeouts(idle_timeout_s)),
        response_headers_to_add=list(response_headers),
    )


def weighted_route(name: str, match: rc_pb2.RouteMatch,
                   clusters: Sequence[tuple[str, int, Sequence[base_pb2.HeaderValueOption]]],
                   *, retries: int = 5, idle_timeout_s: float = 60.0,
                   max_age_s: float | None = None,
                   mirrors: Sequence[rc_pb2.RouteAction.RequestMirrorPolicy] = (),
                   response_headers: Iterable[base_pb2.HeaderValueOption] = ()
                   ) -> rc_pb2.Route:
    """A route split over ``clusters`` (name, relative weight, response headers) by
    Envoy's ``weighted_clusters``. Weights must sum to more than 0; a cluster at weight 0
    stays named, so a weight change never touches CDS. ``max_age_s`` bounds a stream's
    whole life (see :func:`_timeouts`); ``mirrors`` copy each request elsewhere (Envoy
    drops the copies' answers); ``response_headers`` go on every answer."""
    if sum(weight for _, weight, _ in clusters) <= 0:
        raise ValueError("weights must sum to more than 0")
    return rc_pb2.Route(
        name=name, match=match,
        route=rc_pb2.RouteAction(
            weighted_clusters=rc_pb2.WeightedCluster(clusters=[
                rc_pb2.WeightedCluster.ClusterWeight(
                    name=cluster, weight=wrappers_pb2.UInt32Value(value=weight),
                    response_headers_to_add=list(headers))
                for cluster, weight, headers in clusters
            ]),
            retry_policy=_retry_policy(retries), **_timeouts(idle_timeout_s, max_age_s),
            request_mirror_policies=list(mirrors),
        ),
        response_headers_to_add=list(response_headers),
    )


def _timeouts(idle_timeout_s: float, max_age_s: float | None = None) -> dict[str, Any]:
    """No limit on a request's whole duration (a long generation streams for minutes);
    ``idle_timeout_s`` without a byte either way ends it (a hung request or stream).
    ``max_age_s`` (long-lived streams that carry many requests) ends a stream that old,
    so it reopens on the current split: Envoy's ``max_stream_duration``, which answers
    DEADLINE_EXCEEDED before the first response and resets the stream after it."""
    timeouts: dict[str, Any] = {"timeout": _duration(0),
                                "idle_timeout": _duration(idle_timeout_s)}
    if max_age_s is not None:
        timeouts["max_stream_duration"] = rc_pb2.RouteAction.MaxStreamDuration(
            max_stream_duration=_duration(max_age_s))
    return timeouts


def route_configuration(name: str, routes: Iterable[rc_pb2.Route], *,
                        validate_clusters: bool = True,
                        remove_request_headers: Iterable[str] = ()
                        ) -> route_pb2.RouteConfiguration:
    """One virtual host matching every domain. ``validate_clusters`` makes Envoy reject
    (NACK) a table naming an unknown cluster; ``remove_request_headers`` are stripped from
    every request before it goes upstream (after routing)."""
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[rc_pb2.VirtualHost(name="models", domains=["*"], routes=list(routes))],
        validate_clusters=wrappers_pb2.BoolValue(value=validate_clusters),
        request_headers_to_remove=list(remove_request_headers),
    )
