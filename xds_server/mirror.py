"""Envoy resources of shadow traffic: copies of a share of live requests sent to another
cluster by Envoy itself, both answers recorded by Envoy's tap filter for a reader outside
the live path (``gates.shadow``).

How the copy is made, all inside Envoy: a route placed before the split matches a share of
requests (``runtime_fraction``); it takes the same split, marks the live response
(``x-turnout-shadow: live``) and mirrors the request (``request_mirror_policies``) back
into this Envoy's own ingress (``self_cluster``) with the shadow key in a header. There a
route taking only that key sends the copy to the candidate's cluster and marks its
response ``copy``; the copy's answer is dropped by Envoy's mirror. The HTTP connection
manager's tap filter (admin-controlled, idle without a session) records both exchanges:
one request id (``x-request-id``, the mirror keeps it) pairs them. The header names are
the caller's (``triton_slots.routing``).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.common.tap.v3 import common_pb2 as tap_common_pb2
from envoy.extensions.filters.http.tap.v3 import tap_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2

SELF_CLUSTER = "turnout_ingress_self"


def _any(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def tap_filter(config_id: str) -> hcm_pb2.HttpFilter:
    """Envoy's HTTP tap filter under admin control (a reader opens a session with
    ``POST /tap`` on ``config_id``), recording when each side's headers arrived (the
    latency of both answers to one request)."""
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.tap",
        typed_config=_any(tap_pb2.Tap(
            common_config=tap_common_pb2.CommonExtensionConfig(
                admin_config=tap_common_pb2.AdminConfig(config_id=config_id)),
            record_headers_received_time=True)))


def self_cluster(host: str, port: int) -> cluster_pb2.Cluster:
    """A static HTTP/2 cluster pointing at this Envoy's own ingress (where copies go to
    be routed to the candidate and recorded)."""
    http2 = hpo_pb2.HttpProtocolOptions(
        explicit_http_config=hpo_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port))))
    return cluster_pb2.Cluster(
        name=SELF_CLUSTER, type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=SELF_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _any(http2)})


def sampled(match: rc_pb2.RouteMatch, percent: float) -> rc_pb2.RouteMatch:
    """``match`` for ``percent`` % of requests (Envoy draws per request)."""
    sampled_match = rc_pb2.RouteMatch()
    sampled_match.CopyFrom(match)
    sampled_match.runtime_fraction.CopyFrom(_fraction(percent))
    return sampled_match


def _fraction(percent: float) -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=round(percent * 10_000),
            denominator=percent_pb2.FractionalPercent.MILLION),
        runtime_key="turnout.shadow_percent")


def mirror_policy(header: str, key: str) -> rc_pb2.RouteAction.RequestMirrorPolicy:
    """Every request of the route copied to this Envoy's ingress with ``header: key``
    (only the copy has it; the host keeps Envoy's ``-shadow`` suffix)."""
    return rc_pb2.RouteAction.RequestMirrorPolicy(
        cluster=SELF_CLUSTER,
        request_headers_mutations=[_set_request_header(header, key)])


def _set_request_header(name: str, value: str):  # type: ignore[no-untyped-def]
    from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
    return mutation_rules_pb2.HeaderMutation(append=base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
