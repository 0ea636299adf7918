"""The local stack: blue and green Triton pools, the control plane and Envoy, as real
processes on loopback, each logging to ``<dir>/logs``. ``stack.json`` records them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from triton_slots.artifact import inspect
from triton_slots.launcher import TritonServer, prepare_backends
from triton_slots.procs import (
    ManagedProcess,
    ProcessError,
    free_port,
    kill_processes_naming,
    pid_alive,
    process_identity,
    stop_if_ours,
)
from triton_slots.registry import open_registry
from triton_slots.routing import SLOT_NAMES
from triton_slots.slot import Endpoint, Slot
from turnout.assets import EXAMPLE_MODELS
from turnout.client import ApiClient
from turnout.config import ControlPlaneConfig
from turnout.errors import StackError
from turnout.postgres import PostgresServer
from turnout.prometheus import TARGETS_FILE, PrometheusServer, render_config
from turnout.proxy import (
    DRAIN_TIME_S,
    PARENT_SHUTDOWN_S,
    EnvoyProxy,
    forget_shared_memory,
    hot_restart,
    read_base_id,
)
from turnout.seed import registry_root, seed_all, slot_repository
from turnout.tokens import Role, mint
from xds_server.pki import LocalCA, write_private
from xds_server.transport import TlsFiles

EXAMPLE_MODEL = EXAMPLE_MODELS / "classifier" / "v1"
DEFAULT_DIR = Path(".turnout")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def missing_stack(directory: Path, what: str, looked_for: str) -> StackError:
    """No ``what`` in ``directory`` (``looked_for`` is the file that would say there is):
    most often a mistyped ``--dir``, so the message says what was looked for before it
    mentions starting a new stack."""
    why = ("the directory does not exist" if not directory.exists()
           else f"it has no {looked_for}" if directory.is_dir() else "it is not a directory")
    return StackError(f"no {what} in {directory}: {why}. Check --dir (or TURNOUT_DIR); "
                      f"`turnout stack up --dir {directory}` would start a new stack there")


@dataclass
class StackInfo:
    """What ``turnout stack up`` started; read by every other command."""

    directory: str
    ingress: str
    api_url: str
    token: str
    xds_port: int
    envoy_admin: str
    models: list[str] = field(default_factory=list)
    api_ca: str = ""  # the CA that signed the API's certificate, when it is served over TLS
    prometheus_url: str = ""
    slots: dict[str, list[dict]] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid
    logs: dict[str, str] = field(default_factory=dict)
    # name -> start time of the process (``process_identity``): a pid reused by another
    # process is never signalled.
    identities: dict[str, str] = field(default_factory=dict)
    preview_key: str = ""
    transport: str = "plaintext"
    complete: bool = True  # False while `stack up` is still starting processes
    # With --replicas N > 1: the shared PostgreSQL and each replica (name, api_url,
    # xds_port, envoy_admin of the Envoy that prefers it).
    postgres_url: str = ""
    postgres_dir: str = ""
    replicas: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> StackInfo:
        path = directory / "stack.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise missing_stack(directory, "stack", "stack.json") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise StackError(f"{path} is not a stack record: {exc}") from exc

    def save(self) -> None:
        """Written readable by its owner only: it holds the admin token."""
        write_private(Path(self.directory) / "stack.json",
                      json.dumps(asdict(self), indent=2).encode())

    def record(self, process: ManagedProcess) -> None:
        self.processes[process.name] = process.pid
        self.logs[process.name] = str(process.log_path)
        identity = process.identity
        if identity is not None:
            self.identities[process.name] = identity
        self.save()

    @property
    def directory_path(self) -> Path:
        return Path(self.directory)

    def endpoints(self, slot: str) -> list[Endpoint]:
        return [Endpoint.from_dict(e) for e in self.slots.get(slot, [])]

    def client(self, *, actor: str | None = None) -> ApiClient:
        """The API client for this stack, with its admin token (and, for an API served over
        HTTPS, trusting the stack's CA)."""
        tls = ssl.create_default_context(cafile=self.api_ca or None) \
            if self.api_url.startswith("https:") else None
        return ApiClient(self.api_url, self.token, actor=actor, tls=tls)


def start_slots(
    directory: Path, *, per_slot: int = 1, models: list[Path] | None = None,
    progress: Progress = _quiet, on_start: Callable[[ManagedProcess], None] = lambda _: None,
) -> dict[str, list[TritonServer]]:
    """Start ``per_slot`` Triton servers for each slot, each slot with its own model
    repository holding every model of ``models``; wait until all are ready. Stops them all
    on failure. ``on_start`` hears of each process as soon as it exists."""
    backends = prepare_backends(directory / "triton-backends")
    records = seed_all(directory, models or [EXAMPLE_MODEL])
    servers: dict[str, list[TritonServer]] = {s: [] for s in SLOT_NAMES}
    try:
        for slot in SLOT_NAMES:
            repository = slot_repository(directory, slot)
            for index in range(per_slot):
                name = f"triton-{slot}-{index}"
                server = TritonServer.start(
                    name=name, model_repository=repository, backends=backends,
                    log_path=directory / "logs" / f"{name}.log",
                    models=[r.model_name for r in records],
                )
                servers[slot].append(server)
                on_start(server.process)
        for pool in servers.values():
            for server in pool:
                waited = server.wait_ready()
                progress(f"  {server.process.name} ready on {server.endpoint.grpc_address}"
                         f" ({waited:.1f}s)")
    except BaseException:
        for pool in servers.values():
            for server in pool:
                server.stop()
        raise
    return servers


def _wait_ports(path: Path, process: ManagedProcess, timeout: float = 20.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise ProcessError(f"control plane did not start in {timeout:.0f}s; log {process.log_path}")


def start_control_plane(directory: Path, name: str = "controlplane",
                        log_dir: Path | None = None) -> ManagedProcess:
    """Start the control plane from ``<directory>/controlplane.json`` (same ports every
    time, so Envoy and Prometheus find it again after a restart); wait until it listens."""
    config_path = directory / "controlplane.json"
    ports_path = directory / "controlplane.ports"
    ports_path.unlink(missing_ok=True)
    plane = ManagedProcess.spawn(
        name,
        [sys.executable, "-m", "turnout.controlplane", "--config", str(config_path)],
        log_path=(log_dir or directory / "logs") / f"{name}.log",
    )
    try:
        _wait_ports(ports_path, plane)
    except BaseException:
        plane.stop()
        raise
    return plane


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM during start-up unwinds like Ctrl-C, so what was started gets stopped."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _running(info: StackInfo) -> list[str]:
    return [name for name, pid in info.processes.items()
            if pid_alive(pid) and info.identities.get(name) in (None, process_identity(pid))]


def make_pki(directory: Path, node_ids: tuple[str, ...]) -> tuple[TlsFiles, dict[str, TlsFiles]]:
    """A fresh CA with a server certificate for the control plane and one client
    certificate per node id (each allowed to claim its own id only)."""
    ca = LocalCA.create(directory)
    server = ca.issue_server()
    clients = {}
    for node in node_ids:
        issued = ca.issue_client(f"client-{node}", (node,))
        clients[node] = TlsFiles(issued.cert, issued.key, ca.cert)
    return TlsFiles(server.cert, server.key, ca.cert), clients


def api_certificate(directory: Path) -> TlsFiles:
    """A server certificate for the API from the stack's CA (made if there is none)."""
    ca = LocalCA(directory) if (directory / "ca.pem").exists() else LocalCA.create(directory)
    issued = ca.issue_server("api")
    return TlsFiles(issued.cert, issued.key, ca.cert)


def up(
    directory: Path = DEFAULT_DIR, *, per_slot: int = 1, models: list[Path] | None = None,
    scrape_interval_s: float = 1.0, tls: bool = False, progress: Progress = _quiet,
    webhooks: list[dict] | None = None, replicas: int = 1, api_tls: bool = False,
    expected_proxies: tuple[str, ...] = (), stream_max_age_s: float = 120.0,
) -> StackInfo:
    """Start the whole local stack and record it in ``<directory>/stack.json`` (0600),
    each process as soon as it starts. Interrupted (Ctrl-C, SIGTERM) or failed, it stops
    what it started. ``tls``: mTLS between Envoy and the control plane's ADS port.
    ``replicas`` > 1: a private PostgreSQL, that many control planes sharing it, and one
    Envoy per replica (preferring it, falling back to the others); all Envoys bind the
    same ingress port (SO_REUSEPORT), so clients see one address. ``expected_proxies``:
    the node ids pushes wait for (the config's field of that name); ``stream_max_age_s``
    the bound on a long-lived gRPC stream's age (the config's field, 0: none)."""
    directory = directory.resolve()
    if (directory / "stack.json").exists():
        previous = StackInfo.load(directory)
        if _running(previous):
            raise StackError(
                f"a stack is already running in {directory} (ingress {previous.ingress}); "
                f"stop it with `turnout stack down --dir {directory}`"
            )
    directory.mkdir(parents=True, exist_ok=True)
    logs = directory / "logs"
    admin, secret = mint("stack-admin", Role.ADMIN)
    info = StackInfo(directory=str(directory), ingress="", api_url="", token=secret,
                     xds_port=0, envoy_admin="", complete=False,
                     transport="mtls" if tls else "plaintext")
    started: list[ManagedProcess] = []

    def record(process: ManagedProcess) -> None:
        started.append(process)
        info.record(process)

    with _interruptible():
        try:
            models = models or [EXAMPLE_MODEL]
            model_names = [inspect(m).model_name for m in models]
            progress(f"starting {per_slot} Triton server(s) per slot serving "
                     + ", ".join(f"{n} ({m.name})"
                                 for n, m in zip(model_names, models, strict=True)))
            servers = start_slots(directory, per_slot=per_slot, models=models,
                                  progress=progress, on_start=record)
            slots = {name: Slot(name, tuple(s.endpoint for s in pool),
                                slot_repository(directory, name))
                     for name, pool in servers.items()}
            envoy_ids = tuple(f"envoy-{i}" for i in range(replicas))
            admin_ports = {node: free_port() for node in envoy_ids}
            server_tls, client_tls = None, {}
            if tls:
                progress("creating a local CA and certificates (mTLS on the ADS port)")
                server_tls, client_tls = make_pki(directory / "pki", envoy_ids)
            api_files = None
            if api_tls:
                progress("certificate for the API (HTTPS), signed by the stack's CA")
                api_files = api_certificate(directory / "pki")
                info.api_ca = str(api_files.ca)
            store = ""
            if replicas > 1:
                progress("starting PostgreSQL (the replicas' shared store)")
                postgres = PostgresServer.start(log_path=logs / "postgresql.log")
                info.postgres_url, info.postgres_dir = postgres.url, str(postgres.data_dir)
                record(postgres.process)
                store = postgres.url
                progress("seeding the shared registry (the replicas share no directory)")
                seed_all(directory, models or [EXAMPLE_MODEL],
                         registry=open_registry(store, registry_root(directory)))
            prometheus_port = free_port()
            config = ControlPlaneConfig(
                state_dir=directory, tokens=(admin,), ingress_port=free_port(),
                xds_port=free_port(), api_port=free_port(), slots=slots,
                registry_root=str(registry_root(directory)),
                prometheus_url=f"http://127.0.0.1:{prometheus_port}", tls=server_tls,
                api_tls=api_files,
                webhooks=tuple(webhooks or ()), store=store,
                replica="replica-0" if store else "", expected_proxies=expected_proxies,
                stream_max_age_s=stream_max_age_s,
                shadow_admins=tuple(f"http://127.0.0.1:{port}" for port in admin_ports.values()),
            )
            configs = [config] + [
                dataclasses.replace(config, state_dir=directory / f"replica-{i}",
                                    xds_port=free_port(), api_port=free_port(),
                                    replica=f"replica-{i}")
                for i in range(1, replicas)]
            for i, replica in enumerate(configs):
                replica.state_dir.mkdir(parents=True, exist_ok=True)
                replica.write(replica.state_dir / "controlplane.json")
                name = "controlplane" if i == 0 else f"controlplane-{i}"
                progress(f"starting control plane {replica.replica or ''}".rstrip())
                record(start_control_plane(replica.state_dir, name, logs))
            envoys = []
            for i, node in enumerate(envoy_ids):
                progress(f"starting {node}")
                order = configs[i:] + configs[:i]  # its own replica first
                envoy = EnvoyProxy.start(
                    node_id=node, admin_port=admin_ports[node], node_cluster=config.group,
                    xds_host="127.0.0.1",
                    xds_port=order[0].xds_port, work_dir=directory, log_dir=logs,
                    tls=client_tls.get(node),
                    xds_fallbacks=[("127.0.0.1", c.xds_port) for c in order[1:]],
                )
                record(envoy.process)
                waited = envoy.wait_ready()
                envoys.append(envoy)
                progress(f"  {node} ready ({waited:.1f}s, xDS over {info.transport})")
            envoy = envoys[0]
            progress(f"starting prometheus (scrape every {scrape_interval_s:g}s)")
            prometheus = PrometheusServer.start(
                directory=directory / "prometheus", port=prometheus_port,
                log_path=logs / "prometheus.log",
                config_text=render_config(
                    scrape_interval_s=scrape_interval_s,
                    envoy_admin=[f"127.0.0.1:{e.admin_port}" for e in envoys],
                    control_plane=[f"127.0.0.1:{c.api_port}" for c in configs],
                    control_plane_ca=api_files.ca if api_files else None,
                    slots=slots,
                    targets_files=[c.state_dir / TARGETS_FILE for c in configs]),
            )
            record(prometheus.process)
            waited = prometheus.wait_ready()
            progress(f"  prometheus ready on {prometheus.url} ({waited:.1f}s)")
        except BaseException:
            for process in reversed(started):
                process.stop()
            kill_processes_naming(directory)  # spawned, not yet recorded, when interrupted
            if info.postgres_dir:
                shutil.rmtree(info.postgres_dir, ignore_errors=True)
            (directory / "stack.json").unlink(missing_ok=True)
            raise
    info.ingress = config.ingress_address
    info.api_url = f"{config.api_scheme}://127.0.0.1:{config.api_port}"
    info.xds_port = config.xds_port
    info.envoy_admin = envoy.admin_url
    info.models = model_names
    info.prometheus_url = prometheus.url
    info.slots = {name: [e.as_dict() for e in slot.endpoints]
                  for name, slot in config.slots.items()}
    info.preview_key = config.preview_key
    if replicas > 1:
        info.replicas = [{"name": c.replica,
                          "api_url": f"{c.api_scheme}://127.0.0.1:{c.api_port}",
                          "xds_port": c.xds_port, "envoy_admin": e.admin_url,
                          "process": "controlplane" if i == 0 else f"controlplane-{i}",
                          "state_dir": str(c.state_dir)}
                         for i, (c, e) in enumerate(zip(configs, envoys, strict=True))]
    info.complete = True
    info.save()
    return info


def restart_control_plane(directory: Path = DEFAULT_DIR) -> int:
    """Stop the control plane if it runs, start it again with the same config and ports,
    and record its new pid. Weights and rollout state come back from the store."""
    directory = directory.resolve()
    info = StackInfo.load(directory)
    old = info.processes.get("controlplane")
    if old is not None:
        stop_if_ours(old, info.identities.get("controlplane"))
    plane = start_control_plane(directory)
    info.record(plane)
    return plane.pid


def envoy_admins(info: StackInfo) -> dict[str, str]:
    """Each Envoy of the stack (its node id) and its admin URL."""
    if info.replicas:
        return {f"envoy-{i}": r["envoy_admin"] for i, r in enumerate(info.replicas)}
    return {"envoy-0": info.envoy_admin}


def restart_envoy(directory: Path = DEFAULT_DIR, *, node: str | None = None,
                  parent_shutdown_s: float = PARENT_SHUTDOWN_S,
                  progress: Progress = _quiet) -> list[tuple[str, int, int, float]]:
    """Hot-restart the stack's Envoys (or only ``node``), one after another: each new
    process reads its bootstrap file again and takes the listening sockets over while the
    old one drains (``DRAIN_TIME_S``) and exits ``parent_shutdown_s`` after the new one
    started; requests in flight finish on the old one (one still running then is cut).
    Returns (node, old pid, new pid, seconds) for each."""
    directory = directory.resolve()
    info = StackInfo.load(directory)
    admins = envoy_admins(info)
    if node is not None and node not in admins:
        raise StackError(f"no Envoy {node!r} in this stack (it has {', '.join(admins)})")
    done = []
    for name, admin in admins.items():
        if node is not None and name != node:
            continue
        key = f"envoy {name}"
        pid = info.processes.get(key)
        if pid is None or not pid_alive(pid):
            raise StackError(f"{name} is not running (pid {pid}); `turnout stack down` and "
                             "`up` start it again")
        old = ManagedProcess(key, pid, Path(info.logs.get(key, directory / "logs" /
                                                          f"envoy-{name}.log")))
        progress(f"{name}: hot restart (the old process drains for {DRAIN_TIME_S}s and ends "
                 f"{parent_shutdown_s:g}s after the new one starts)")
        started = time.monotonic()
        try:
            new = hot_restart(admin, node_id=name, log_path=old.log_path, old=old,
                              base_id_path=directory / f"envoy-{name}.base-id",
                              parent_shutdown_s=parent_shutdown_s)
        except ProcessError as exc:
            raise StackError(str(exc)) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise StackError(f"{name}: cannot read its admin {admin}: {exc}") from exc
        info.record(new.process)
        took = time.monotonic() - started
        progress(f"  {name}: pid {pid} -> {new.process.pid}, old one gone after {took:.1f}s")
        done.append((name, pid, new.process.pid, took))
    return done


def down(directory: Path = DEFAULT_DIR, *, progress: Progress = _quiet) -> list[str]:
    """Stop every process of the stack (Envoy first, Triton last), each with its process
    group, and forget it. A recorded pid now held by another process is left alone."""
    directory = directory.resolve()
    info = StackInfo.load(directory)
    stopped = []
    for name, pid in reversed(list(info.processes.items())):
        if stop_if_ours(pid, info.identities.get(name)):
            stopped.append(name)
            progress(f"stopped {name} (pid {pid})")
        elif pid_alive(pid):
            progress(f"left pid {pid} alone: it is no longer {name} (started at another "
                     "time)")
    if info.postgres_dir:
        shutil.rmtree(info.postgres_dir, ignore_errors=True)
    for base_id_file in directory.glob("envoy-*.base-id"):
        base_id = read_base_id(base_id_file)
        if base_id is not None:
            forget_shared_memory(base_id)
    (directory / "stack.json").unlink(missing_ok=True)
    return stopped
