"""A slot is a named pool of Triton endpoints sharing one model repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SLOT_NAMES: tuple[str, str] = ("blue", "green")
#: The request header that pins a request to one slot (preview); its value is the slot name.
SLOT_HEADER = "x-turnout-slot"
#: The request header carrying the operator's preview key; without the right key the slot
#: header is ignored (and stripped) and the request takes the weighted split.
PREVIEW_KEY_HEADER = "x-turnout-preview-key"
#: The response header naming the slot that served a request.
SERVED_BY_HEADER = "x-turnout-served-by"


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


def cluster_name(slot: str) -> str:
    """The Envoy cluster that carries ``slot``'s gRPC traffic."""
    return f"slot_{slot}"


def http_cluster_name(slot: str) -> str:
    """The Envoy cluster that carries ``slot``'s KServe v2 HTTP/REST traffic."""
    return f"slot_{slot}_http"


def failover_name(cluster: str) -> str:
    """The aggregate cluster the weighted split names for ``cluster``: the slot's own
    servers first, the other slot's when none of them is healthy."""
    return f"{cluster}_ha"


def preview_name(cluster: str) -> str:
    """The cluster preview (pinned) requests for ``cluster``'s slot take: the same
    servers, its own statistics, so gates never count pinned traffic."""
    return f"{cluster}_preview"


@dataclass(frozen=True)
class Slot:
    """A pool of Triton endpoints (``blue`` or ``green``) serving one model repository,
    with the names every layer uses for it (Envoy clusters; its name is also the value of
    the preview header ``SLOT_HEADER``)."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    repository: Path | None = None

    def __post_init__(self) -> None:
        if self.name not in SLOT_NAMES:
            raise ValueError(f"slot must be one of {SLOT_NAMES}, not {self.name!r}")
        object.__setattr__(self, "endpoints", tuple(self.endpoints))

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
        return {"endpoints": [e.as_dict() for e in self.endpoints],
                "repository": str(self.repository) if self.repository else ""}

    @classmethod
    def from_dict(cls, name: str, data: dict) -> Slot:
        repository = data.get("repository") or None
        return cls(name, tuple(Endpoint.from_dict(e) for e in data.get("endpoints", [])),
                   Path(repository) if repository else None)
