"""The local stack: blue and green Triton pools, the control plane and Envoy, as real
processes on loopback, each logging to ``<dir>/logs``. ``stack.json`` records them."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from triton_slots.artifact import inspect
from triton_slots.launcher import TritonServer, prepare_backends
from triton_slots.procs import ManagedProcess, ProcessError, free_port, pid_alive, stop_pid
from triton_slots.slot import SLOT_NAMES, Endpoint, Slot
from turnout.config import ControlPlaneConfig
from turnout.errors import StackError
from turnout.prometheus import PrometheusServer, render_config
from turnout.proxy import EnvoyProxy
from turnout.seed import registry_root, seed_all, slot_repository

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = REPO_ROOT / "examples" / "models" / "classifier" / "v1"
DEFAULT_DIR = Path(".turnout")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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
    prometheus_url: str = ""
    slots: dict[str, list[dict]] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid
    logs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> StackInfo:
        path = directory / "stack.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise StackError(
                f"no stack in {directory}: start one with `turnout stack up --dir {directory}`"
            ) from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise StackError(f"{path} is not a stack record: {exc}") from exc

    def save(self) -> None:
        path = Path(self.directory) / "stack.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self), indent=2))
        os.replace(partial, path)

    @property
    def directory_path(self) -> Path:
        return Path(self.directory)

    def endpoints(self, slot: str) -> list[Endpoint]:
        return [Endpoint.from_dict(e) for e in self.slots.get(slot, [])]


def start_slots(
    directory: Path, *, per_slot: int = 1, models: list[Path] | None = None,
    progress: Progress = _quiet,
) -> dict[str, list[TritonServer]]:
    """Start ``per_slot`` Triton servers for each slot, each slot with its own model
    repository holding every model of ``models``; wait until all are ready. Stops them all
    on failure."""
    backends = prepare_backends(directory / "triton-backends")
    records = seed_all(directory, models or [EXAMPLE_MODEL])
    servers: dict[str, list[TritonServer]] = {s: [] for s in SLOT_NAMES}
    try:
        for slot in SLOT_NAMES:
            repository = slot_repository(directory, slot)
            for index in range(per_slot):
                name = f"triton-{slot}-{index}"
                servers[slot].append(
                    TritonServer.start(
                        name=name, model_repository=repository, backends=backends,
                        log_path=directory / "logs" / f"{name}.log",
                        models=[r.model_name for r in records],
                    )
                )
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


def start_control_plane(directory: Path) -> ManagedProcess:
    """Start the control plane from ``<directory>/controlplane.json`` (same ports every
    time, so Envoy and Prometheus find it again after a restart); wait until it listens."""
    config_path = directory / "controlplane.json"
    ports_path = directory / "controlplane.ports"
    ports_path.unlink(missing_ok=True)
    plane = ManagedProcess.spawn(
        "controlplane",
        [sys.executable, "-m", "turnout.controlplane", "--config", str(config_path)],
        log_path=directory / "logs" / "controlplane.log",
    )
    try:
        _wait_ports(ports_path, plane)
    except BaseException:
        plane.stop()
        raise
    return plane


def up(
    directory: Path = DEFAULT_DIR, *, per_slot: int = 1, models: list[Path] | None = None,
    scrape_interval_s: float = 1.0, progress: Progress = _quiet,
) -> StackInfo:
    """Start the whole local stack and record it in ``<directory>/stack.json``."""
    directory = directory.resolve()
    if (directory / "stack.json").exists():
        info = StackInfo.load(directory)
        if any(pid_alive(pid) for pid in info.processes.values()):
            raise StackError(
                f"a stack is already running in {directory} (ingress {info.ingress}); "
                f"stop it with `turnout stack down --dir {directory}`"
            )
    directory.mkdir(parents=True, exist_ok=True)
    logs = directory / "logs"
    started: list[ManagedProcess] = []
    try:
        models = models or [EXAMPLE_MODEL]
        model_names = [inspect(m).model_name for m in models]
        progress(f"starting {per_slot} Triton server(s) per slot serving "
                 + ", ".join(f"{n} ({m.name})" for n, m in zip(model_names, models, strict=True)))
        servers = start_slots(directory, per_slot=per_slot, models=models, progress=progress)
        started += [s.process for pool in servers.values() for s in pool]
        slots = {name: Slot(name, tuple(s.endpoint for s in pool),
                            slot_repository(directory, name))
                 for name, pool in servers.items()}
        prometheus_port = free_port()
        config = ControlPlaneConfig(
            state_dir=directory, token=secrets.token_urlsafe(24), ingress_port=free_port(),
            xds_port=free_port(), api_port=free_port(), slots=slots,
            registry_root=str(registry_root(directory)),
            prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        )
        config_path = directory / "controlplane.json"
        config_path.write_text(config.to_json())
        config_path.chmod(0o600)
        progress("starting control plane")
        started.append(start_control_plane(directory))
        progress("starting envoy")
        envoy = EnvoyProxy.start(
            node_id="envoy-0", node_cluster=config.group, xds_host="127.0.0.1",
            xds_port=config.xds_port, work_dir=directory, log_dir=logs,
        )
        started.append(envoy.process)
        waited = envoy.wait_ready()
        progress(f"  envoy ready ({waited:.1f}s)")
        progress(f"starting prometheus (scrape every {scrape_interval_s:g}s)")
        prometheus = PrometheusServer.start(
            directory=directory / "prometheus", port=prometheus_port,
            log_path=logs / "prometheus.log",
            config_text=render_config(
                scrape_interval_s=scrape_interval_s,
                envoy_admin=f"127.0.0.1:{envoy.admin_port}",
                control_plane=f"127.0.0.1:{config.api_port}", slots=slots),
        )
        started.append(prometheus.process)
        waited = prometheus.wait_ready()
        progress(f"  prometheus ready on {prometheus.url} ({waited:.1f}s)")
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    info = StackInfo(
        directory=str(directory),
        ingress=config.ingress_address,
        api_url=f"http://127.0.0.1:{config.api_port}",
        token=config.token,
        xds_port=config.xds_port,
        envoy_admin=envoy.admin_url,
        models=model_names,
        prometheus_url=prometheus.url,
        slots={name: [e.as_dict() for e in slot.endpoints]
               for name, slot in config.slots.items()},
        processes={p.name: p.pid for p in started},
        logs={p.name: str(p.log_path) for p in started},
    )
    info.save()
    return info


def restart_control_plane(directory: Path = DEFAULT_DIR) -> int:
    """Stop the control plane if it runs, start it again with the same config and ports,
    and record its new pid. Weights and rollout state come back from the store."""
    directory = directory.resolve()
    info = StackInfo.load(directory)
    old = info.processes.get("controlplane")
    if old is not None and pid_alive(old):
        stop_pid(old)
    plane = start_control_plane(directory)
    info.processes["controlplane"] = plane.pid
    info.save()
    return plane.pid


def down(directory: Path = DEFAULT_DIR, *, progress: Progress = _quiet) -> list[str]:
    """Stop every process of the stack (Envoy first, Triton last) and forget it."""
    directory = directory.resolve()
    info = StackInfo.load(directory)
    stopped = []
    for name, pid in reversed(list(info.processes.items())):
        if pid_alive(pid):
            stop_pid(pid)
            stopped.append(name)
            progress(f"stopped {name} (pid {pid})")
    (directory / "stack.json").unlink(missing_ok=True)
    return stopped
