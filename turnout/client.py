"""A small client of the control API, used by the CLI and the demo."""

from __future__ import annotations

import getpass
import json
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from turnout.errors import ApiError


class ApiClient:
    """Talks to one control plane. Synchronous; safe to use from several threads."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 actor: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: how to verify an https API (None: the system's CAs)."""
        self.actor = actor or f"cli:{getpass.getuser()}"
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.tls = tls

    def _call(self, method: str, path: str, body: dict | None = None, *,
              raw: bytes | None = None, timeout: float | None = None) -> Any:
        """``body`` goes as JSON, ``raw`` as a gzip'd tar."""
        data = raw if raw is not None else json.dumps(body).encode() if body is not None \
            else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/octet-stream" if raw is not None
                           else "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("X-Turnout-Actor", self.actor)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout,
                                        context=self.tls) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                body = json.load(exc)
                message = body.get("error", exc.reason)
                problems = body.get("problems") or []
            except (json.JSONDecodeError, AttributeError):
                message, problems = exc.reason, []
            if problems:
                message = message + ":\n" + "\n".join(problems)
            raise ApiError(message, status=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"control plane at {self.base_url} unreachable: {exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(f"{self.base_url}{path} did not answer JSON: is it a Turnout "
                           "control plane?") from exc

    def identify(self) -> dict[str, Any]:
        """The API's own description; ApiError unless it is a Turnout control plane."""
        document = self._call("GET", "/openapi.json")
        title = document.get("info", {}).get("title") if isinstance(document, dict) else None
        if title != "Turnout control plane API":
            raise ApiError(f"{self.base_url} is not a Turnout control plane (its "
                           f"/openapi.json names {title!r})")
        return document

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def set_traffic(self, *, green: int, timeout: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"green": green}
        if timeout is not None:
            body["timeout"] = timeout
        return self._call("POST", "/v1/traffic", body)

    def apply(self, policy_text: str, source: str, *, force: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"policy": policy_text, "source": source}
        if force:
            body["force"] = True
        return self._call("POST", "/v1/rollouts", body)

    def rollout(self) -> dict[str, Any]:
        return self._call("GET", "/v1/rollouts/current")

    def command(self, name: str, *, full: bool = False) -> dict[str, Any]:
        return self._call("POST", f"/v1/rollouts/current/{name}", {"full": full})

    def history(self, *, rollout: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        query = f"?limit={limit}" + (f"&rollout={rollout}" if rollout else "")
        return self._call("GET", "/v1/history" + query)

    def dashboard_code(self) -> dict[str, Any]:
        """A one-time sign-in code for a ``read`` dashboard session (60 s)."""
        return self._call("POST", "/dashboard/code", {})

    def slots(self) -> dict[str, Any]:
        return self._call("GET", "/v1/slots")

    def add_endpoint(self, slot: str, host: str, *, grpc_port: int, http_port: int,
                     metrics_port: int) -> dict[str, Any]:
        return self._call("POST", f"/v1/slots/{quote(slot, safe='')}/endpoints", {
            "host": host, "grpc_port": grpc_port, "http_port": http_port,
            "metrics_port": metrics_port})

    def remove_endpoint(self, slot: str, address: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/slots/{quote(slot, safe='')}/endpoints/"
                                    f"{quote(address, safe='')}")

    # ---- the registry, deploy and validate, done by the control plane ------------------
    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/models")

    def model(self, name: str, version: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/models/{quote(name, safe='')}/{quote(version, safe='')}")

    def push_model(self, name: str, version: str, artifact: bytes, *, source: str = "",
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
        """``artifact``: the model directory as a gzip'd tar."""
        query = urlencode([("source", source)] * bool(source)
                          + [("label", f"{k}={v}") for k, v in (labels or {}).items()])
        return self._call("PUT", f"/v1/models/{quote(name, safe='')}/"
                                 f"{quote(version, safe='')}" + (f"?{query}" if query else ""),
                          raw=artifact, timeout=max(self.timeout, 300.0))

    def deploy_model(self, name: str, version: str, *, slot: str | None = None,
                     force: bool = False, timeout: float = 120.0) -> dict[str, Any]:
        body: dict[str, Any] = {"force": force, "timeout": timeout}
        if slot:
            body["slot"] = slot
        return self._call("POST", f"/v1/models/{quote(name, safe='')}/"
                                  f"{quote(version, safe='')}/deploy", body,
                          timeout=timeout + 30)

    def validate_model(self, name: str, version: str, *, force: bool = False
                       ) -> dict[str, Any]:
        return self._call("POST", f"/v1/models/{quote(name, safe='')}/"
                                  f"{quote(version, safe='')}/validate", {"force": force},
                          timeout=max(self.timeout, 600.0))
