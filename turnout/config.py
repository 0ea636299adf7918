"""The control plane's configuration file (JSON, written by ``turnout stack up``)."""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from triton_slots.routing import SLOT_NAMES
from triton_slots.slot import Endpoint, Slot
from turnout.connlimit import ConnectionLimits
from turnout.errors import ConfigError
from turnout.tokens import ApiToken, Role, digest
from xds_server.pki import write_private
from xds_server.transport import TlsFiles, is_loopback

_WILDCARDS = {"0.0.0.0", "::", ""}
EXAMPLE_SECRETS = {"change-me", "changeme", "secret", "token", "example", "password", "admin",
                   "turnout"}
MIN_SECRET = 24


def _secret_from_env(name: str) -> str:
    """A secret from the environment, refused when unset, short or an example value."""
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(f"environment variable {name} is empty or unset: set it to a "
                          f"random secret of at least {MIN_SECRET} characters")
    if value.lower() in EXAMPLE_SECRETS or len(value) < MIN_SECRET:
        raise ConfigError(f"environment variable {name} holds an example or short value: "
                          f"use a random secret of at least {MIN_SECRET} characters "
                          "(e.g. `openssl rand -base64 32`)")
    return value


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Where the control plane listens, what it routes to, and where it keeps state.

    ``ingress_host``/``ingress_port`` are where Envoy's listener *binds*;
    ``ingress_client`` is the ``host:port`` at which the control plane itself reaches
    Envoy (validation traffic). They differ in compose, where the listener binds
    ``0.0.0.0`` in the Envoy container and the control plane reaches it as ``envoy:8080``.
    """

    state_dir: Path
    tokens: tuple[ApiToken, ...]
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
    tick_s: float = 0.1  # how often the rollout loop looks at the clock and its inbox
    min_proxies: int = 1  # a push converges only once at least this many Envoys ACKed
    tls: TlsFiles | None = None  # mTLS on the ADS port when set
    api_tls: TlsFiles | None = None  # the API (and dashboard) over HTTPS when set
    # Containers: the environment variable holding an admin token's secret (and the
    # preview key); a missing, short or example value stops the control plane.
    token_env: str = ""
    preview_key_env: str = ""
    # Webhook receivers told of every rollout: {url, format, secret | secretEnv, events}.
    webhooks: tuple[dict[str, Any], ...] = ()
    # Envoy streams every request's outcome to the control plane over this bootstrap
    # cluster (the ADS one); the gates' `source: envoy` reads it. "" turns it off.
    access_log_cluster: str = "turnout_xds"
    # Durable state: "" is SQLite in state_dir; postgresql://... is a database shared by
    # several replicas (one leads rollouts, all serve xDS). `replica` names this one.
    store: str = ""
    replica: str = ""
    # Proxyless gRPC clients dial xds:///<grpc_target> ("" turns it off).
    grpc_target: str = "turnout"
    # Requests pinned to a slot by the preview header must also carry this key.
    preview_key: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # A request or stream through Envoy ends after this long without a byte either way;
    # nothing limits its whole duration (a generation may stream for minutes).
    stream_idle_timeout_s: float = 60.0
    # A gRPC ModelStreamInfer stream (one stream, many requests) taking the weighted split
    # ends this old and reopens on the split of its time, so after a weight change, a
    # promotion or a rollback no stream stays on the old split longer than this. 120 s: a
    # client that reopens at a request boundary after half of it (triton_slots.streaming.
    # LongStream) never has a generation of up to 60 s cut; 0 turns the bound off.
    stream_max_age_s: float = 120.0
    # Envoy's tap filter on the ingress, idle until a shadow stage reads it through each
    # proxy's admin (shadow_admins), and a request id on every request (x-request-id).
    # Needed for shadow traffic; a listener change, so switched here, not per rollout.
    shadow_tap: bool = True
    # The admin URLs (http://host:port) of the proxies whose taps a shadow stage reads.
    shadow_admins: tuple[str, ...] = ()
    # The dashboard: {"public": true} serves its data without a token (demos only;
    # refused unless bind_host is a loopback address).
    dashboard: dict[str, Any] = field(default_factory=dict)
    # The API's listening socket: {"connections": 1024, "per_client": 128,
    # "head_timeout_s": 10} (turnout/connlimit.py); a key left out keeps its default.
    api_limits: dict[str, Any] = field(default_factory=dict)
    # The node ids (shell patterns, "envoy-*") a push waits for; other nodes are served
    # but cannot hold a push up by never answering. Empty: every connected proxy (with
    # mTLS, every certificate holder that connected).
    expected_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.token_env:
            secret = _secret_from_env(self.token_env)
            object.__setattr__(self, "tokens", (
                *self.tokens, ApiToken(f"env:{self.token_env}", Role.ADMIN, digest(secret))))
        if self.preview_key_env:
            object.__setattr__(self, "preview_key", _secret_from_env(self.preview_key_env))
        object.__setattr__(self, "webhooks", tuple(dict(w) for w in self.webhooks))
        if not self.tokens:
            raise ConfigError("no API tokens configured: mint one with turnout.tokens.mint")
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ConfigError(f"token names must be unique, got {names}")
        if len(self.preview_key) < 16:
            raise ConfigError("preview_key must be at least 16 characters")
        self._check_dashboard()
        self.connection_limits  # noqa: B018 - checked at load, not at the first connection
        if not isinstance(self.expected_proxies, list | tuple) or not all(
                isinstance(p, str) and 0 < len(p) <= 256 for p in self.expected_proxies) \
                or len(self.expected_proxies) > 64:
            raise ConfigError("expected_proxies must be a list of at most 64 node ids or "
                              f"patterns (1..256 characters), got {self.expected_proxies!r}")
        object.__setattr__(self, "expected_proxies", tuple(self.expected_proxies))
        if not isinstance(self.shadow_admins, list | tuple) or not all(
                isinstance(a, str) and a.startswith(("http://", "https://"))
                for a in self.shadow_admins):
            raise ConfigError("shadow_admins must be a list of proxy admin URLs "
                              f"(http://host:port), got {self.shadow_admins!r}")
        object.__setattr__(self, "shadow_admins", tuple(self.shadow_admins))
        if isinstance(self.stream_idle_timeout_s, bool) or not isinstance(
                self.stream_idle_timeout_s, int | float) or not 1 <= self.stream_idle_timeout_s \
                <= 3600:
            raise ConfigError(f"stream_idle_timeout_s must be a number of seconds in 1..3600, "
                              f"got {self.stream_idle_timeout_s!r}")
        if isinstance(self.stream_max_age_s, bool) or not isinstance(
                self.stream_max_age_s, int | float) or not (
                self.stream_max_age_s == 0 or 2 <= self.stream_max_age_s <= 86400):
            raise ConfigError("stream_max_age_s must be 0 (no bound) or a number of seconds in "
                              f"2..86400, got {self.stream_max_age_s!r}")
        unknown = set(self.slots) - set(SLOT_NAMES)
        if unknown:
            raise ConfigError(f"unknown slot(s) {sorted(unknown)}; slots are {SLOT_NAMES}")
        owner: dict[str, str] = {}
        for name, slot in self.slots.items():
            if slot.name != name:
                raise ConfigError(f"slot {name!r} holds the definition of {slot.name!r}")
            for endpoint in slot.endpoints:
                other = owner.setdefault(endpoint.grpc_address, name)
                if other != name:
                    raise ConfigError(f"endpoint {endpoint.grpc_address} is in both slots "
                                      f"({other} and {name}): a server serves one slot")

    def expects(self, node_id: str) -> bool:
        """Whether pushes wait for ``node_id``'s answer."""
        return not self.expected_proxies or any(
            fnmatch.fnmatchcase(node_id, pattern) for pattern in self.expected_proxies)

    def _check_dashboard(self) -> None:
        if not isinstance(self.dashboard, dict):
            raise ConfigError(f"dashboard must be an object like {{\"public\": false}}, "
                              f"got {self.dashboard!r}")
        unknown = sorted(set(self.dashboard) - {"public"})
        if unknown:
            raise ConfigError(f"dashboard: unknown field(s) {unknown}; allowed: public")
        public = self.dashboard.get("public", False)
        if not isinstance(public, bool):
            raise ConfigError(f"dashboard.public must be true or false, got {public!r}")
        if public and not is_loopback(self.bind_host):
            raise ConfigError(f"dashboard.public serves rollout data without a token: only "
                              f"with the API on a loopback address, but bind_host is "
                              f"{self.bind_host!r}")

    @property
    def api_scheme(self) -> str:
        return "https" if self.api_tls else "http"

    @property
    def dashboard_public(self) -> bool:
        return bool(self.dashboard.get("public", False))

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
        data["tokens"] = [t.as_dict() for t in self.tokens
                          if not t.name.startswith("env:")]
        data["tls"] = self.tls.as_dict() if self.tls else None
        data["api_tls"] = self.api_tls.as_dict() if self.api_tls else None
        return json.dumps(data, indent=2)

    def write(self, path: Path) -> None:
        """Write the config readable by its owner only (it holds the preview key)."""
        write_private(path, self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlPlaneConfig:
        data = dict(data)
        data["state_dir"] = Path(data["state_dir"])
        data["slots"] = {name: Slot.from_dict(name, value)
                         for name, value in data.get("slots", {}).items()}
        data["tokens"] = tuple(ApiToken.from_dict(t) for t in data.get("tokens", ()))
        data["tls"] = TlsFiles.from_dict(data["tls"]) if data.get("tls") else None
        data["api_tls"] = TlsFiles.from_dict(data["api_tls"]) if data.get("api_tls") else None
        return cls(**data)

    @property
    def connection_limits(self) -> ConnectionLimits:
        known = {"connections": "total", "per_client": "per_client",
                 "head_timeout_s": "head_timeout_s"}
        if not isinstance(self.api_limits, dict):
            raise ConfigError(f"api_limits must be an object, got {self.api_limits!r}")
        values: dict[str, Any] = {}
        for key, value in self.api_limits.items():
            if key not in known:
                raise ConfigError(f"api_limits.{key}: unknown (known: {', '.join(known)})")
            top = 3600 if key == "head_timeout_s" else 1_000_000
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not 1 <= value <= top or (key != "head_timeout_s" and value != int(value)):
                raise ConfigError(f"api_limits.{key} must be a number in 1..{top}"
                                  f"{'' if key == 'head_timeout_s' else ' (whole)'}, got "
                                  f"{value!r}")
            values[known[key]] = value
        return ConnectionLimits(**values)

    @classmethod
    def load(cls, path: Path) -> ControlPlaneConfig:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such file") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: invalid control plane config: {exc}") from exc
