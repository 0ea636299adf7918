"""A real Prometheus for the local stack: config generated from the stack's targets
(Envoy's admin, every Triton metrics port labelled with its slot, the control plane)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from triton_slots.procs import ManagedProcess, ProcessError, free_port, wait_http
from triton_slots.slot import Slot
from turnout.assets import ASSETS

RULES = ASSETS / "prometheus" / "rules.yml"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise ProcessError("prometheus not found: run `make prometheus` "
                           "(apt-get install -y --no-install-recommends prometheus)")
    return found


#: The Triton servers' file-based service discovery, rewritten by the control plane in its
#: state directory as servers come and go (the ``slot`` label included).
TARGETS_FILE = "triton-targets.json"


def render_config(*, scrape_interval_s: float, envoy_admin: str | Sequence[str],
                  control_plane: str | Sequence[str], slots: Mapping[str, Slot],
                  rules: Path | None = RULES,
                  targets_files: Sequence[Path] = (),
                  control_plane_ca: Path | None = None) -> str:
    """Scrape every Envoy admin and control plane given (one each, or lists: replicas).
    Triton servers: from ``targets_files`` when given (file-based discovery the control
    plane rewrites as servers come and go, slot label included), else ``slots``."""
    interval = f"{scrape_interval_s:g}s"
    envoys = [envoy_admin] if isinstance(envoy_admin, str) else list(envoy_admin)
    planes = [control_plane] if isinstance(control_plane, str) else list(control_plane)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        **({"rule_files": [str(rules)]} if rules is not None else {}),
        "scrape_configs": [
            {"job_name": "envoy", "metrics_path": "/stats/prometheus",
             "static_configs": [{"targets": envoys}]},
            {"job_name": "turnout", "metrics_path": "/metrics",
             **({"scheme": "https", "tls_config": {"ca_file": str(control_plane_ca)}}
                if control_plane_ca else {}),
             "static_configs": [{"targets": planes}]},
            {"job_name": "triton",
             **({"file_sd_configs": [{"files": [str(f) for f in targets_files],
                                      "refresh_interval": "30s"}]} if targets_files else
                {"static_configs": [
                    {"targets": [e.metrics_target for e in slot.endpoints],
                     "labels": {"slot": name}}
                    for name, slot in slots.items() if slot.endpoints]})},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class PrometheusServer:
    url: str
    process: ManagedProcess

    @classmethod
    def start(cls, *, directory: Path, config_text: str, log_path: Path, port: int = 0
              ) -> PrometheusServer:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(config_text)
        port = port or free_port()
        argv = [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2d",
            # no --web.enable-lifecycle: anyone who reaches the port could stop it
        ]
        process = ManagedProcess.spawn("prometheus", argv, log_path=log_path)
        return cls(f"http://127.0.0.1:{port}", process)

    def wait_ready(self, *, timeout: float = 30.0) -> float:
        return wait_http(self.process, f"{self.url}/-/ready", timeout=timeout,
                         what="prometheus")
