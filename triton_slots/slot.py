"""A slot is a named pool of Triton endpoints sharing one model repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from triton_slots.routing import (
    SLOT_NAMES,
    cluster_name,
    failover_name,
    http_cluster_name,
    preview_name,
)


@dataclass(frozen=True)
class Endpoint:
    """One Triton server: its loopback (or host) address and three ports."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def _netloc_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host  # IPv6 in brackets

    @property
    def http_url(self) -> str:
        return f"http://{self._netloc_host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self._netloc_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._netloc_host}:{self.metrics_port}/metrics"

    @property
    def metrics_target(self) -> str:
        """``host:port`` of the metrics port, as Prometheus names a target."""
        return f"{self._netloc_host}:{self.metrics_port}"

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


@dataclass(frozen=True)
class DnsName:
    """Servers found by DNS: one A/AAAA record per server (a Kubernetes headless Service
    gives exactly that), all serving on the same three ports; looked up again every
    ``interval_s``."""

    name: str
    grpc_port: int
    http_port: int
    metrics_port: int
    interval_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 253:
            raise ValueError(f"dns.name must be a host name, got {self.name!r}")
        for field_name in ("grpc_port", "http_port", "metrics_port"):
            port = getattr(self, field_name)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"dns.{field_name} must be a port 1..65535, got {port!r}")
        if not 0.1 <= self.interval_s <= 3600:
            raise ValueError(f"dns.interval_s must be 0.1..3600 seconds, got {self.interval_s!r}")

    def endpoint(self, address: str) -> Endpoint:
        return Endpoint(address, self.http_port, self.grpc_port, self.metrics_port)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "grpc_port": self.grpc_port, "http_port": self.http_port,
                "metrics_port": self.metrics_port, "interval_s": self.interval_s}


@dataclass(frozen=True)
class Slot:
    """A pool of Triton endpoints (``blue`` or ``green``) with the names every layer uses
    for it (Envoy clusters; its name is also the value of the preview header
    ``SLOT_HEADER``). ``endpoints`` are the servers it has now; ``dns`` (if set) finds more
    as they come and go; ``repository`` is a model repository directory shared with its
    servers (None: nothing shared, models travel in the load requests)."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    repository: Path | None = None
    dns: DnsName | None = None

    def __post_init__(self) -> None:
        if self.name not in SLOT_NAMES:
            raise ValueError(f"slot must be one of {SLOT_NAMES}, not {self.name!r}")
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        seen = set()
        for endpoint in self.endpoints:
            if endpoint.grpc_address in seen:
                raise ValueError(f"slot {self.name}: endpoint {endpoint.grpc_address} is "
                                 "listed twice")
            seen.add(endpoint.grpc_address)

    @property
    def cluster(self) -> str:
        return cluster_name(self.name)

    @property
    def http_cluster(self) -> str:
        return http_cluster_name(self.name)

    @property
    def failover_cluster(self) -> str:
        return failover_name(self.cluster)

    @property
    def failover_http_cluster(self) -> str:
        return failover_name(self.http_cluster)

    @property
    def preview_cluster(self) -> str:
        return preview_name(self.cluster)

    @property
    def preview_http_cluster(self) -> str:
        return preview_name(self.http_cluster)

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"endpoints": [e.as_dict() for e in self.endpoints],
                                   "repository": str(self.repository) if self.repository
                                   else ""}
        if self.dns is not None:
            data["dns"] = self.dns.as_dict()
        return data

    @classmethod
    def from_dict(cls, name: str, data: dict) -> Slot:
        repository = data.get("repository") or None
        dns = data.get("dns")
        return cls(name, tuple(Endpoint.from_dict(e) for e in data.get("endpoints", [])),
                   Path(repository) if repository else None,
                   DnsName(**dns) if dns else None)
