"""The control plane's HTTP API (aiohttp) on loopback, described by ``openapi.json``
(served at ``GET /openapi.json``).

    GET  /healthz                         liveness (open)
    GET  /metrics                         the control plane's Prometheus metrics (open)
    GET  /openapi.json                    this API's OpenAPI 3 document (open)
    GET  /v1/status                       ingress, weights, slots, proxies, NACK, rollout
    POST /v1/traffic                      {"green": PCT}; refused while a rollout runs
    POST /v1/rollouts                     {"policy": YAML text, "source": file name,
                                          "force": onto the warm standby}
    GET  /v1/rollouts/current             the current (or last) rollout
    POST /v1/rollouts/current/<command>   pause | resume | promote | abort | rollback
                                          (promote takes {"full": true})
    GET  /v1/history?rollout=ID|NAME&limit=N  the audit log (of one rollout)
    /v1/slots...                          each slot's servers (turnout.api_slots)
    /v1/models...                         the registry, deploy, validate (turnout.api_models)

Every ``/v1`` call needs a bearer token; its role decides what it may do (read < operate <
admin) and its name is the actor in the audit log. Bad input is a 4xx naming the field,
checked before anything changes.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from turnout.api_common import (
    PLANE,
    BadInput,
    Handler,
    NotFound,
    body_of,
    error,
    fields,
    flag,
    needs,
    plane_of,
    token_of,
)
from turnout.api_models import add_routes as add_models
from turnout.api_slots import add_routes as add_slots
from turnout.connlimit import ConnectionGuard, GuardedSite, quiet_accept_errors
from turnout.controller.driver import RolloutConflict
from turnout.controller.state import CommandName
from turnout.dashboard import add_routes as add_dashboard
from turnout.notify import WebhookTarget
from turnout.policy import load_text
from turnout.telemetry import CONTENT_TYPE_LATEST
from turnout.tokens import Role
from turnout.weights import Weights

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

OPENAPI = Path(__file__).with_name("openapi.json")
COMMANDS = tuple(c.value for c in CommandName)
HISTORY_LIMIT = 10_000


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=plane_of(request).metrics())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


@needs(Role.READ)
async def _status(request: web.Request) -> web.Response:
    return web.json_response(plane_of(request).status())


def _timeout(body: dict[str, Any]) -> float | None:
    timeout = body.pop("timeout", None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 300):
        raise BadInput(f"field 'timeout' must be a number of seconds in (0, 300], "
                       f"got {timeout!r}")
    return timeout


@needs(Role.ADMIN, body=True)
async def _traffic(request: web.Request) -> web.Response:
    plane = plane_of(request)
    body = dict(body_of(request))
    fields(body, ("blue", "green", "timeout"))
    timeout = _timeout(body)
    weights = Weights.from_mapping(body)
    if plane.controller.busy:
        raise RolloutConflict("a rollout is in progress; use pause/promote/abort/rollback")
    result = await plane.set_weights(weights, actor=token_of(request).name, timeout=timeout)
    return web.json_response({"weights": weights.as_dict(), "push": result.as_dict()})


@needs(Role.OPERATE, body=True)
async def _apply(request: web.Request) -> web.Response:
    plane = plane_of(request)
    body = body_of(request)
    fields(body, ("policy", "source", "force"))
    force = flag(body, "force")
    text = body.get("policy")
    if not isinstance(text, str) or not text.strip():
        raise BadInput("field 'policy' (the YAML text) is required and must be a string")
    source = body.get("source", "<policy>")
    if not isinstance(source, str) or not 0 < len(source) <= 200:
        raise BadInput("field 'source' must be a file name of 1..200 characters")
    # Parsing is bounded (no aliases, 256 KiB) but still off the loop that serves xDS.
    policy = await asyncio.to_thread(load_text, text, source)
    for i, receiver in enumerate(policy.notifications):
        WebhookTarget.from_dict(receiver, f"{source}: spec.notifications[{i}]")
    await plane.controller.apply(policy, actor=token_of(request).name, force=force)
    return web.json_response(plane.controller.describe(), status=201)


@needs(Role.READ)
async def _current(request: web.Request) -> web.Response:
    described = plane_of(request).controller.describe()
    if described is None:
        return error(404, "no rollout yet")
    return web.json_response(described)


@needs(Role.OPERATE, body=True)
async def _command(request: web.Request) -> web.Response:
    name = request.match_info["command"]
    if name not in COMMANDS:
        return error(404, f"unknown command {name!r}; one of {', '.join(COMMANDS)}")
    body = body_of(request)
    fields(body, ("full",))
    full = flag(body, "full")
    if full and name != CommandName.PROMOTE:
        raise BadInput("field 'full' applies to promote only")
    plane = plane_of(request)
    await plane.controller.command(name, actor=token_of(request).name, full=full)
    return web.json_response(plane.controller.describe())


@needs(Role.READ)
async def _history(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - {"limit", "rollout"})
    if unknown:
        raise BadInput(f"unknown query parameter(s) {unknown}; allowed: limit, rollout")
    text = request.query.get("limit", "500")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= HISTORY_LIMIT:
        raise BadInput(f"query parameter 'limit' must be an integer 1..{HISTORY_LIMIT}, "
                       f"got {text[:40]!r}")
    rollout = request.query.get("rollout")
    if rollout is not None and not 0 < len(rollout) <= 100:
        raise BadInput("query parameter 'rollout' must be a rollout id of 1..100 characters")
    store = plane_of(request).store
    ids: list[str] | None = None
    if rollout is not None:  # an id, else a name (every rollout of that name)
        ids = [rollout] if store.rollout(rollout) is not None else store.rollout_ids(rollout)
        if not ids:
            raise NotFound(f"no rollout with id or name {rollout!r}")
    entries = store.history(rollout=ids, limit=int(text))
    return web.json_response([e.as_dict() for e in entries])


@web.middleware
async def _never_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (unknown path, wrong method, body too large) as JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)


def build_app(plane: ControlPlane) -> web.Application:
    """Every route of the API and the dashboard, for ``plane``."""
    # A request line up to 64 KiB reaches the handlers (which answer JSON naming the
    # field); aiohttp's own 8 KiB limit would answer text/plain before them.
    # An idle keep-alive connection is closed after 15 s (aiohttp's default is 75 s).
    app = web.Application(client_max_size=1 << 20, middlewares=[_never_500],
                          handler_args={"max_line_size": 65536, "max_field_size": 65536,
                                        "keepalive_timeout": 15.0})
    app[PLANE] = plane
    app.add_routes([
        web.get("/healthz", _healthz),
        web.get("/metrics", _metrics),
        web.get("/openapi.json", _openapi),
        web.get("/v1/status", _status),
        web.post("/v1/traffic", _traffic),
        web.post("/v1/rollouts", _apply),
        web.get("/v1/rollouts/current", _current),
        web.post("/v1/rollouts/current/{command}", _command),
        web.get("/v1/history", _history),
    ])
    add_slots(app)
    add_models(app)
    add_dashboard(app, plane)
    return app


async def start_api(plane: ControlPlane) -> tuple[web.AppRunner, int]:
    """Serve the API on the configured host (over TLS when ``api_tls`` is set); returns the
    runner and bound port."""
    runner = web.AppRunner(build_app(plane), access_log=None)
    await runner.setup()
    tls = plane.config.api_tls
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
    refused = plane.telemetry.api_refused
    guard = ConnectionGuard(plane.config.connection_limits,
                            lambda reason: refused.labels(reason=reason).inc())
    quiet_accept_errors(asyncio.get_running_loop())
    site = GuardedSite(runner, plane.config.bind_host, plane.config.api_port,
                       guard=guard, ssl_context=context)
    await site.start()
    return runner, site.port
