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
    GET  /v1/history?rollout=ID&limit=N   the audit log
    GET  /v1/slots                        each slot's source, weight and servers
    POST /v1/slots/<slot>/endpoints       {"host", "grpc_port", "http_port", "metrics_port"}
    DELETE /v1/slots/<slot>/endpoints/<host:grpc_port>

Every ``/v1`` call needs a bearer token; its role decides what it may do (read < operate <
admin) and its name is the actor in the audit log. Bad input is a 4xx naming the field,
checked before anything changes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from triton_slots.members import MembershipError, UnknownServer
from triton_slots.slot import Endpoint
from turnout.controller.driver import RolloutConflict
from turnout.controller.guard import SlotInUse
from turnout.controller.state import CommandName, TransitionError
from turnout.dashboard import add_routes as add_dashboard
from turnout.errors import ConfigError
from turnout.notify import WebhookTarget
from turnout.policy import PolicyError, load_text
from turnout.slots import describe as describe_slots
from turnout.store import StoreUnavailable
from turnout.telemetry import CONTENT_TYPE_LATEST
from turnout.tokens import ApiToken, Role, bearer_secret, identify
from turnout.weights import Weights

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

OPENAPI = Path(__file__).with_name("openapi.json")
_PLANE = web.AppKey("plane", object)
_TOKEN = web.RequestKey("token", ApiToken)
_BODY = web.RequestKey("body", dict)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COMMANDS = tuple(c.value for c in CommandName)
HISTORY_LIMIT = 10_000


class BadInput(ValueError):
    """A request the API refuses with 400; the message names the field."""


class NotFound(LookupError):
    """A request for something that is not there (404); the message says what is."""


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _plane(request: web.Request) -> ControlPlane:
    return request.app[_PLANE]  # type: ignore[return-value]


def _token(request: web.Request) -> ApiToken:
    return request[_TOKEN]


def _fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadInput(f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")


def needs(role: Role, *, body: bool = False) -> Callable[[Handler], Handler]:
    """Require a bearer token of at least ``role``; with ``body``, a JSON object body
    (passed as request[_BODY])."""
    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            plane = _plane(request)
            secret = bearer_secret(request.headers.get("Authorization", ""))
            token = identify(plane.tokens(), secret) if secret else None
            if token is None:
                plane.telemetry.api_refused.labels(reason="unauthenticated").inc()
                return _error(401, "missing or unknown bearer token")
            if not token.role.allows(role):
                plane.telemetry.api_refused.labels(reason="role").inc()
                return _error(403, f"token {token.name!r} has role {token.role}; "
                                   f"this needs {role}")
            request[_TOKEN] = token
            if role is not Role.READ and not plane.replication.leading:
                leader = next((r.api_url for r in plane.replication.peers if r.leader),
                              "unknown")
                return _error(503, f"replica {plane.replication.replica} is not the leader; "
                                   f"send this to the leader ({leader})")
            try:
                if body:
                    request[_BODY] = await _json_object(request)
                return await handler(request)
            except BadInput as exc:
                return _error(400, str(exc))
            except PolicyError as exc:
                return _error(400, "invalid policy", problems=[str(p) for p in exc.problems])
            except (NotFound, UnknownServer) as exc:
                return _error(404, str(exc))
            except (RolloutConflict, TransitionError, SlotInUse, MembershipError) as exc:
                return _error(409, str(exc))
            except ConfigError as exc:
                return _error(400, str(exc))
            except StoreUnavailable as exc:
                return _error(503, str(exc))
        return wrapped
    return decorate


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"request body is not UTF-8 (byte {exc.start})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadInput(f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    return body


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=_plane(request).metrics())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


@needs(Role.READ)
async def _status(request: web.Request) -> web.Response:
    return web.json_response(_plane(request).status())


def _timeout(body: dict[str, Any]) -> float | None:
    timeout = body.pop("timeout", None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 300):
        raise BadInput(f"field 'timeout' must be a number of seconds in (0, 300], "
                       f"got {timeout!r}")
    return timeout


@needs(Role.ADMIN, body=True)
async def _traffic(request: web.Request) -> web.Response:
    plane = _plane(request)
    body = dict(request[_BODY])
    _fields(body, ("blue", "green", "timeout"))
    timeout = _timeout(body)
    weights = Weights.from_mapping(body)
    if plane.controller.busy:
        raise RolloutConflict("a rollout is in progress; use pause/promote/abort/rollback")
    result = await plane.set_weights(weights, actor=_token(request).name, timeout=timeout)
    return web.json_response({"weights": weights.as_dict(), "push": result.as_dict()})


@needs(Role.OPERATE, body=True)
async def _apply(request: web.Request) -> web.Response:
    plane = _plane(request)
    body = request[_BODY]
    _fields(body, ("policy", "source", "force"))
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadInput(f"field 'force' must be true or false, got {force!r}")
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
    await plane.controller.apply(policy, actor=_token(request).name, force=force)
    return web.json_response(plane.controller.describe(), status=201)


@needs(Role.READ)
async def _current(request: web.Request) -> web.Response:
    described = _plane(request).controller.describe()
    if described is None:
        return _error(404, "no rollout yet")
    return web.json_response(described)


@needs(Role.OPERATE, body=True)
async def _command(request: web.Request) -> web.Response:
    name = request.match_info["command"]
    if name not in COMMANDS:
        return _error(404, f"unknown command {name!r}; one of {', '.join(COMMANDS)}")
    body = request[_BODY]
    _fields(body, ("full",))
    full = body.get("full", False)
    if not isinstance(full, bool):
        raise BadInput(f"field 'full' must be true or false, got {full!r}")
    if full and name != CommandName.PROMOTE:
        raise BadInput("field 'full' applies to promote only")
    plane = _plane(request)
    await plane.controller.command(name, actor=_token(request).name, full=full)
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
    entries = _plane(request).store.history(rollout=rollout, limit=int(text))
    return web.json_response([e.as_dict() for e in entries])


def _slots_view(plane: ControlPlane) -> dict[str, Any]:
    return describe_slots(plane.members, plane.weights, lambda e: plane.health.get(e, False))


@needs(Role.READ)
async def _slots(request: web.Request) -> web.Response:
    return web.json_response(_slots_view(_plane(request)))


#: Triton's own default ports, for fields left out.
TRITON_PORTS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_")


def _slot_name(request: web.Request) -> str:
    name = request.match_info["slot"]
    plane = _plane(request)
    if name not in plane.members.slots:
        raise NotFound(f"no slot {name[:40]!r} here; slots: "
                            f"{', '.join(sorted(plane.members.slots))}")
    return name


def endpoint_from(body: Mapping[str, Any]) -> Endpoint:
    """A server from a request body; :class:`BadInput` names the field."""
    _fields(body, ("host", *TRITON_PORTS))
    host = body.get("host")
    if not isinstance(host, str) or not 0 < len(host) <= 253 or set(host) - _HOST_CHARS:
        raise BadInput(f"field 'host' must be a host name or IP address (letters, digits, "
                       f"'.', '-', ':'), got {str(host)[:60]!r}")
    ports = {}
    for name, default in TRITON_PORTS.items():
        port = body.get(name, default)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise BadInput(f"field {name!r} must be a port number 1..65535, got {port!r}")
        ports[name] = port
    if len(set(ports.values())) != len(ports):
        raise BadInput(f"the server's ports must differ, got {ports}")
    return Endpoint(host, ports["http_port"], ports["grpc_port"], ports["metrics_port"])


@needs(Role.ADMIN, body=True)
async def _add_endpoint(request: web.Request) -> web.Response:
    plane = _plane(request)
    slot = _slot_name(request)
    endpoint = endpoint_from(request[_BODY])
    plane.slot_servers.add(plane.members, slot, endpoint, actor=_token(request).name)
    return web.json_response(_slots_view(plane)[slot], status=202)


@needs(Role.ADMIN)
async def _remove_endpoint(request: web.Request) -> web.Response:
    plane = _plane(request)
    slot = _slot_name(request)
    address = request.match_info["address"]
    plane.slot_servers.remove(plane.members, slot, address[:300], actor=_token(request).name,
                              weights=plane.weights)
    return web.json_response(_slots_view(plane)[slot])


@web.middleware
async def _never_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (unknown path, wrong method, body too large) as JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


async def start_api(plane: ControlPlane) -> tuple[web.AppRunner, int]:
    """Serve the API on the configured host (over TLS when ``api_tls`` is set); returns the
    runner and bound port."""
    app = web.Application(client_max_size=1 << 20, middlewares=[_never_500])
    app[_PLANE] = plane
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
        web.get("/v1/slots", _slots),
        web.post("/v1/slots/{slot}/endpoints", _add_endpoint),
        web.delete("/v1/slots/{slot}/endpoints/{address}", _remove_endpoint),
    ])
    add_dashboard(app, plane)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = plane.config.api_tls
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
    site = web.TCPSite(runner, plane.config.bind_host, plane.config.api_port,
                       ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)
