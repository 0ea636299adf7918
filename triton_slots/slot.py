"""A slot is a named pool of Triton endpoints sharing one model repository."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SLOT_NAMES: tuple[str, str] = ("blue", "green")


@dataclass(frozen=True)
class Endpoint:
    """One Triton server: its loopback (or host) address and three ports."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Endpoint:
        return cls(data["host"], data["http_port"], data["grpc_port"], data["metrics_port"])


@dataclass
class Slot:
    """A pool of Triton endpoints (``blue`` or ``green``) serving one model repository."""

    name: str
    endpoints: list[Endpoint] = field(default_factory=list)
    model_repository: Path | None = None

    def __post_init__(self) -> None:
        if self.name not in SLOT_NAMES:
            raise ValueError(f"slot must be one of {SLOT_NAMES}, not {self.name!r}")

    @property
    def cluster(self) -> str:
        """The Envoy cluster that carries this slot's traffic."""
        return f"slot_{self.name}"
