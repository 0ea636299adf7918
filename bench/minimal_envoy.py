"""A minimal static Envoy in front of one Triton server: no xDS, no retries, no header
rules, one route, one static HTTP/2 cluster. The data-path benchmark's second baseline:
it tells Envoy's own cost on this machine apart from Turnout's configuration."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from triton_slots.procs import ManagedProcess, free_port, wait_http
from triton_slots.slot import Endpoint
from turnout.proxy import envoy_binary

_HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager")
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def bootstrap(listen_port: int, admin_port: int, upstream: Endpoint) -> dict:
    def address(port: int) -> dict:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    return {
        "admin": {"address": address(admin_port)},
        "static_resources": {
            "listeners": [{"name": "ingress", "address": address(listen_port),
                           "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                               "@type": _HCM, "stat_prefix": "ingress", "codec_type": "HTTP2",
                               "route_config": {"virtual_hosts": [{
                                   "name": "all", "domains": ["*"],
                                   "routes": [{"match": {"prefix": "/"},
                                               "route": {"cluster": "triton"}}]}]},
                               "http_filters": [{"name": "router",
                                                 "typed_config": {"@type": _ROUTER}}]}}]}]}],
            "clusters": [{
                "name": "triton", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {_HTTP: {
                    "@type": f"type.googleapis.com/{_HTTP}",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "triton", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": address(upstream.grpc_port)}}]}]}}]},
    }


@contextlib.contextmanager
def minimal_envoy(upstream: Endpoint) -> Iterator[str]:
    """Yields the listener's host:port; the Envoy is stopped on exit."""
    listen_port, admin_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="turnout-minimal-envoy-") as tmp:
        config = Path(tmp) / "envoy.yaml"
        config.write_text(yaml.safe_dump(bootstrap(listen_port, admin_port, upstream)))
        process = ManagedProcess.spawn(
            "minimal envoy", [envoy_binary(), "-c", str(config), "--disable-hot-restart",
                              "--concurrency", "1"], log_path=Path(tmp) / "envoy.log")
        try:
            wait_http(process, f"http://127.0.0.1:{admin_port}/ready", timeout=20,
                      what="minimal envoy")
            yield f"127.0.0.1:{listen_port}"
        finally:
            process.stop()
