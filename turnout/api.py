"""The control plane's HTTP API (aiohttp) on loopback. Changes need the bearer token.

    GET  /healthz          liveness
    GET  /v1/status        ingress, weights, slots and readiness, proxies, last NACK
    POST /v1/traffic       {"green": PCT} or {"blue": B, "green": G}; waits for the ACKs
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

from aiohttp import web

from turnout.errors import ConfigError
from turnout.weights import Weights

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

_PLANE = web.AppKey("plane", object)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorised(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _status(request: web.Request) -> web.Response:
    plane: ControlPlane = request.app[_PLANE]  # type: ignore[assignment]
    return web.json_response(plane.status())


async def _traffic(request: web.Request) -> web.Response:
    plane: ControlPlane = request.app[_PLANE]  # type: ignore[assignment]
    if not _authorised(request, plane.config.token):
        return _error(401, "missing or wrong bearer token")
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        return _error(400, f"request body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    timeout = body.pop("timeout", None)
    try:
        weights = Weights.from_mapping(body)
    except ConfigError as exc:
        return _error(400, str(exc))
    result = await plane.set_weights(weights, timeout=timeout)
    return web.json_response({"weights": weights.as_dict(), "push": result.as_dict()})


async def start_api(plane: ControlPlane) -> tuple[web.AppRunner, int]:
    """Serve the API on the configured loopback host; returns the runner and bound port."""
    app = web.Application()
    app[_PLANE] = plane
    app.add_routes(
        [
            web.get("/healthz", _healthz),
            web.get("/v1/status", _status),
            web.post("/v1/traffic", _traffic),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, plane.config.bind_host, plane.config.api_port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)
