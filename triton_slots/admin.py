"""Triton's HTTP repository and health API for one server (load, unload, ready, config).

Foreign errors (HTTP, sockets) become :class:`TritonAdminError` carrying Triton's message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from triton_slots.slot import Endpoint

#: Where Triton restricts its repository API (``--http-restricted-api=model-repository:
#: turnout-admin-key=SECRET``, as in docker-compose.yml), the control plane sends the slot's
#: secret in this header: see :func:`admin_key`.
ADMIN_KEY_ENV = "TURNOUT_TRITON_ADMIN_KEY"
ADMIN_KEY_HEADER = "turnout-admin-key"
#: Over gRPC Triton wants the same key in a prefixed header (``--grpc-restricted-protocol=
#: model-repository:turnout-admin-key=SECRET``).
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"


def admin_key(slot: str | None) -> str | None:
    """The secret the repository API of ``slot``'s servers wants: the slot's own
    (``TURNOUT_TRITON_ADMIN_KEY_BLUE``, or ``TURNOUT_TRITON_ADMIN_KEY_BLUE_FILE`` naming a
    file such as a compose secret), else one key for every slot
    (``TURNOUT_TRITON_ADMIN_KEY``), else none. Per-slot keys mean a candidate that reads
    its own server's key can open no other slot. Raises ValueError naming the variable when
    its file cannot be read or is empty."""
    names = [f"{ADMIN_KEY_ENV}_{slot.upper()}"] if slot else []
    for name in [*names, ADMIN_KEY_ENV]:
        path = os.environ.get(name + "_FILE")
        if path:
            try:
                key = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{name}_FILE={path}: cannot read the key: {exc}") from None
            if not key:
                raise ValueError(f"{name}_FILE={path}: the file is empty")
            return key
        if os.environ.get(name):
            return os.environ[name]
    return None


class TritonAdminError(RuntimeError):
    def __init__(self, endpoint: Endpoint, message: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint.http_url}: {message}")


class TritonAdmin:
    def __init__(self, endpoint: Endpoint, *, timeout: float = 60.0,
                 slot: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.slot = slot  # whose repository-API key to send

    def refused(self, what: str, message: str) -> TritonAdminError:
        """``what`` failed with Triton's ``message``; a restricted-API refusal says which
        key was sent (Triton says only that it expects the header, right key or not)."""
        if "restricted" in message:
            name = f"{ADMIN_KEY_ENV}_{self.slot.upper()}" if self.slot else ADMIN_KEY_ENV
            message += (f" (the repository-API key sent for slot {self.slot or '(any)'} is "
                        f"missing or not this server's: {name} or {name}_FILE)")
        return TritonAdminError(self.endpoint, f"{what} failed: {message}")

    @property
    def key(self) -> str | None:
        try:
            return admin_key(self.slot)
        except ValueError as exc:
            raise TritonAdminError(self.endpoint, str(exc)) from None

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST"
                                                                   else None)
        request = urllib.request.Request(self.endpoint.http_url + path, data=data, method=method)
        key = self.key
        if key:
            request.add_header(ADMIN_KEY_HEADER, key)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode())
            except (json.JSONDecodeError, AttributeError):
                message = raw.decode(errors="replace") or exc.reason
            return exc.code, {"error": message}
        except (urllib.error.URLError, OSError) as exc:
            raise TritonAdminError(self.endpoint, f"unreachable: {exc}") from exc

    def load(self, model: str) -> None:
        """Load ``model`` from the server's own repository (files sent in the request go
        over gRPC: ``triton_slots.delivery.repository_api``)."""
        status, body = self._call("POST", f"/v2/repository/models/{model}/load")
        if status != 200:
            raise self.refused(f"load {model!r}", str(body["error"]))

    def model_ready(self, model: str, *, strict: bool = False) -> bool:
        """Whether the server says ``model`` is ready; a server that does not answer is
        False, or with ``strict`` a :class:`TritonAdminError` (it went away)."""
        try:
            status, _ = self._call("GET", f"/v2/models/{model}/ready")
        except TritonAdminError:
            if strict:
                raise
            return False
        return status == 200

    def model_config(self, model: str) -> dict[str, Any]:
        status, body = self._call("GET", f"/v2/models/{model}/config")
        if status != 200:
            raise TritonAdminError(self.endpoint, f"config of {model!r}: {body['error']}")
        return body

    def index(self) -> list[dict[str, Any]]:
        status, body = self._call("POST", "/v2/repository/index", {})
        if status != 200:
            raise TritonAdminError(self.endpoint, f"repository index: {body['error']}")
        return body

    def server_version(self) -> str:
        """The Triton version the server reports (``GET /v2``)."""
        status, body = self._call("GET", "/v2")
        if status != 200 or not isinstance(body, dict) or "version" not in body:
            raise TritonAdminError(self.endpoint, f"server metadata: {body}")
        return str(body["version"])

    def explicit_control(self) -> bool:
        """Whether the server takes load/unload requests (``--model-control-mode=explicit``):
        unloading a name no repository holds is a no-op there; other modes answer 503."""
        status, body = self._call("POST", f"/v2/repository/models/{_PROBE}/unload", {})
        if status == 200:
            return True
        if "not allowed" in str(body):
            return False
        raise TritonAdminError(self.endpoint, f"model control check: {body}")


#: A model name no one uses (the explicit-control probe unloads it).
_PROBE = "turnout-explicit-control-probe"


def check_server(endpoint: Endpoint, peers: tuple[Endpoint, ...] = (), *,
                 timeout: float = 10.0, slot: str | None = None) -> str:
    """Refuse a server Turnout cannot manage, or one unlike the fleet's: its model control
    must be explicit, and its Triton version that of the first peer that answers (two
    identical clusters). Returns its version; raises :class:`TritonAdminError` naming it."""
    admin = TritonAdmin(endpoint, timeout=timeout, slot=slot)
    if not admin.explicit_control():
        raise TritonAdminError(endpoint, "explicit model control is off: start tritonserver "
                                         "with --model-control-mode=explicit (Turnout loads "
                                         "and unloads the slot's models on it)")
    version = admin.server_version()
    for peer in peers:
        if peer == endpoint:
            continue
        try:
            theirs = TritonAdmin(peer, timeout=timeout).server_version()
        except TritonAdminError:
            continue
        if theirs != version:
            raise TritonAdminError(endpoint, f"runs Triton {version} but {peer.grpc_address} "
                                             f"runs {theirs}: every server of both slots "
                                             "must run one Triton version")
        break
    return version
