"""The control plane's configuration file (JSON, written by ``turnout stack up``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from triton_slots.slot import SLOT_NAMES, Endpoint, Slot
from turnout.errors import ConfigError

_WILDCARDS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Where the control plane listens, what it routes to, and where it keeps state.

    ``ingress_host``/``ingress_port`` are where Envoy's listener *binds*;
    ``ingress_client`` is the ``host:port`` at which the control plane itself reaches
    Envoy (validation traffic). They differ in compose, where the listener binds
    ``0.0.0.0`` in the Envoy container and the control plane reaches it as ``envoy:8080``.
    """

    state_dir: Path
    token: str
    ingress_port: int
    xds_port: int = 0
    api_port: int = 0
    ingress_host: str = "127.0.0.1"
    ingress_client: str = ""
    bind_host: str = "127.0.0.1"
    group: str = "turnout"
    health_interval_s: float = 1.0
    push_timeout_s: float = 10.0
    slots: dict[str, Slot] = field(default_factory=dict)
    registry_root: str = ""
    prometheus_url: str = ""
    tick_s: float = 0.25
    min_proxies: int = 1  # a push converges only once at least this many Envoys ACKed

    def __post_init__(self) -> None:
        unknown = set(self.slots) - set(SLOT_NAMES)
        if unknown:
            raise ConfigError(f"unknown slot(s) {sorted(unknown)}; slots are {SLOT_NAMES}")
        for name, slot in self.slots.items():
            if slot.name != name:
                raise ConfigError(f"slot {name!r} holds the definition of {slot.name!r}")

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def ingress_address(self) -> str:
        """Where the control plane sends requests to reach Envoy's ingress."""
        if self.ingress_client:
            return self.ingress_client
        host = "127.0.0.1" if self.ingress_host in _WILDCARDS else self.ingress_host
        return f"{host}:{self.ingress_port}"

    def slot(self, name: str) -> Slot:
        try:
            return self.slots[name]
        except KeyError:
            raise ConfigError(f"no slot {name!r} configured (slots: {sorted(self.slots)})"
                              ) from None

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for slot in self.slots.values() for e in slot.endpoints]

    def to_json(self) -> str:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["slots"] = {name: slot.as_dict() for name, slot in self.slots.items()}
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlPlaneConfig:
        data = dict(data)
        data["state_dir"] = Path(data["state_dir"])
        data["slots"] = {name: Slot.from_dict(name, value)
                         for name, value in data.get("slots", {}).items()}
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> ControlPlaneConfig:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such file") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: invalid control plane config: {exc}") from exc
