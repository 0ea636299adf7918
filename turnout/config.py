"""The control plane's configuration file (JSON, written by ``turnout stack up``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from triton_slots.slot import SLOT_NAMES, Endpoint
from turnout.errors import ConfigError


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Where the control plane listens, what it routes to, and where it keeps state."""

    state_dir: Path
    token: str
    ingress_port: int
    xds_port: int = 0
    api_port: int = 0
    ingress_host: str = "127.0.0.1"
    bind_host: str = "127.0.0.1"
    group: str = "turnout"
    health_interval_s: float = 1.0
    push_timeout_s: float = 10.0
    slots: dict[str, list[Endpoint]] = field(default_factory=dict)
    repositories: dict[str, str] = field(default_factory=dict)  # slot -> model repository
    registry_root: str = ""
    prometheus_url: str = ""
    tick_s: float = 0.25
    min_proxies: int = 1  # a push converges only once at least this many Envoys ACKed

    def __post_init__(self) -> None:
        unknown = set(self.slots) - set(SLOT_NAMES)
        if unknown:
            raise ConfigError(f"unknown slot(s) {sorted(unknown)}; slots are {SLOT_NAMES}")

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.db"

    def to_json(self) -> str:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["slots"] = {s: [e.as_dict() for e in eps] for s, eps in self.slots.items()}
        return json.dumps(data, indent=2)

    @classmethod
    def load(cls, path: Path) -> ControlPlaneConfig:
        try:
            data = json.loads(path.read_text())
            data["state_dir"] = Path(data["state_dir"])
            data["slots"] = {
                s: [Endpoint.from_dict(e) for e in eps] for s, eps in data.get("slots", {}).items()
            }
            return cls(**data)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such file") from exc
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: invalid control plane config: {exc}") from exc
