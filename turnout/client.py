"""A small client of the control API, used by the CLI and the demo."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from turnout.errors import ApiError


class ApiClient:
    """Talks to one control plane. Synchronous; safe to use from several threads."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc).get("error", exc.reason)
            except (json.JSONDecodeError, AttributeError):
                message = exc.reason
            raise ApiError(f"{method} {path}: {message}", status=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"control plane at {self.base_url} unreachable: {exc}") from exc

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def set_traffic(self, *, green: int, timeout: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"green": green}
        if timeout is not None:
            body["timeout"] = timeout
        return self._call("POST", "/v1/traffic", body)
