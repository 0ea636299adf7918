"""The control plane's HTTP API (aiohttp) on loopback. Changes need the bearer token.

    GET  /healthz                         liveness
    GET  /metrics                         the control plane's Prometheus metrics
    GET  /v1/status                       ingress, weights, slots, proxies, NACK, rollout
    POST /v1/traffic                      {"green": PCT}; refused while a rollout runs
    POST /v1/rollouts                     {"policy": YAML text, "source": file name}
    GET  /v1/rollouts/current             the current (or last) rollout
    POST /v1/rollouts/current/<command>   pause | resume | promote | abort | rollback
                                          (promote takes {"full": true})
    GET  /v1/history?rollout=ID&limit=N   the audit log
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from turnout.controller.driver import RolloutConflict
from turnout.controller.state import CommandName, TransitionError
from turnout.errors import ConfigError
from turnout.policy import PolicyError, load_text
from turnout.store import StoreUnavailable
from turnout.telemetry import CONTENT_TYPE_LATEST
from turnout.weights import Weights

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

_PLANE = web.AppKey("plane", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COMMANDS = tuple(c.value for c in CommandName)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _plane(request: web.Request) -> ControlPlane:
    return request.app[_PLANE]  # type: ignore[return-value]


def _actor(request: web.Request) -> str:
    return request.headers.get("X-Turnout-Actor", "api")[:80]


def changes(handler: Handler) -> Handler:
    """Require the bearer token and a JSON object body (passed as request['body'])."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {_plane(request).config.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(401, "missing or wrong bearer token")
        if request.can_read_body:
            try:
                body = await request.json()
            except json.JSONDecodeError as exc:
                return _error(400, f"request body is not JSON: {exc}")
        else:
            body = {}
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        request["body"] = body
        try:
            return await handler(request)
        except PolicyError as exc:
            return _error(400, "invalid policy", problems=[str(p) for p in exc.problems])
        except RolloutConflict as exc:
            return _error(409, str(exc))
        except TransitionError as exc:
            return _error(409, str(exc))
        except ConfigError as exc:
            return _error(400, str(exc))
        except StoreUnavailable as exc:
            return _error(503, str(exc))
    return wrapped


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=_plane(request).metrics())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _status(request: web.Request) -> web.Response:
    return web.json_response(_plane(request).status())


@changes
async def _traffic(request: web.Request) -> web.Response:
    plane = _plane(request)
    body = dict(request["body"])
    if plane.controller.busy:
        raise RolloutConflict("a rollout is in progress; use pause/promote/abort/rollback")
    timeout = body.pop("timeout", None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 300):
        return _error(400, f"field 'timeout' must be a number of seconds in (0, 300], "
                           f"got {timeout!r}")
    weights = Weights.from_mapping(body)
    result = await plane.set_weights(weights, actor=_actor(request), timeout=timeout)
    return web.json_response({"weights": weights.as_dict(), "push": result.as_dict()})


@changes
async def _apply(request: web.Request) -> web.Response:
    plane = _plane(request)
    body = request["body"]
    text = body.get("policy")
    if not isinstance(text, str):
        return _error(400, "field 'policy' (the YAML text) is required")
    policy = load_text(text, str(body.get("source") or "<policy>"))
    await plane.controller.apply(policy, actor=_actor(request))
    return web.json_response(plane.controller.describe(), status=201)


async def _current(request: web.Request) -> web.Response:
    described = _plane(request).controller.describe()
    if described is None:
        return _error(404, "no rollout yet")
    return web.json_response(described)


@changes
async def _command(request: web.Request) -> web.Response:
    name = request.match_info["command"]
    if name not in COMMANDS:
        return _error(404, f"unknown command {name!r}; one of {', '.join(COMMANDS)}")
    plane = _plane(request)
    full = bool(request["body"].get("full", False))
    await plane.controller.command(name, actor=_actor(request), full=full)
    return web.json_response(plane.controller.describe())


async def _history(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        return _error(400, "limit must be an integer")
    entries = _plane(request).store.history(rollout=request.query.get("rollout"), limit=limit)
    return web.json_response([e.as_dict() for e in entries])


async def start_api(plane: ControlPlane) -> tuple[web.AppRunner, int]:
    """Serve the API on the configured loopback host; returns the runner and bound port."""
    app = web.Application(client_max_size=1 << 20)
    app[_PLANE] = plane
    app.add_routes([
        web.get("/healthz", _healthz),
        web.get("/metrics", _metrics),
        web.get("/v1/status", _status),
        web.post("/v1/traffic", _traffic),
        web.post("/v1/rollouts", _apply),
        web.get("/v1/rollouts/current", _current),
        web.post("/v1/rollouts/current/{command}", _command),
        web.get("/v1/history", _history),
    ])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, plane.config.bind_host, plane.config.api_port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)
