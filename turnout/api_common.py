"""What every route of the control plane's API shares: the plane and token of a request,
the role check (``needs``), the JSON body, and one mapping of known errors to statuses (a
4xx naming what and where; never a 500 for bad input)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from triton_slots.artifact import ArtifactError
from triton_slots.deploy import DeployError
from triton_slots.members import MembershipError, UnknownServer
from triton_slots.registry import ArtifactExistsError, ArtifactNotFoundError, RegistryError
from turnout.controller.driver import RolloutConflict
from turnout.controller.guard import SlotInUse
from turnout.controller.state import TransitionError
from turnout.errors import ConfigError, StackError
from turnout.policy import PolicyError
from turnout.store import StoreUnavailable
from turnout.tokens import ApiToken, Role, bearer_secret, identify

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

PLANE = web.AppKey("plane", object)
_TOKEN = web.RequestKey("token", ApiToken)
_BODY = web.RequestKey("body", dict)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadInput(ValueError):
    """A request the API refuses with 400; the message names the field."""


class NotFound(LookupError):
    """A request for something that is not there (404); the message says what is."""


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def plane_of(request: web.Request) -> ControlPlane:
    return request.app[PLANE]  # type: ignore[return-value]


def token_of(request: web.Request) -> ApiToken:
    return request[_TOKEN]


def body_of(request: web.Request) -> dict[str, Any]:
    return request[_BODY]


def fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadInput(f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")


def flag(body: Mapping[str, Any], field: str) -> bool:
    """A true/false field of a request body (false when absent); BadInput otherwise."""
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise BadInput(f"field {field!r} must be true or false, got {value!r}")
    return value


def needs(role: Role, *, body: bool = False) -> Callable[[Handler], Handler]:
    """Require a bearer token of at least ``role``; with ``body``, a JSON object body
    (:func:`body_of`)."""
    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            plane = plane_of(request)
            secret = bearer_secret(request.headers.get("Authorization", ""))
            token = identify(plane.tokens(), secret) if secret else None
            if token is None:
                plane.telemetry.api_refused.labels(reason="unauthenticated").inc()
                return error(401, "missing or unknown bearer token")
            if not token.role.allows(role):
                plane.telemetry.api_refused.labels(reason="role").inc()
                return error(403, f"token {token.name!r} has role {token.role}; "
                                  f"this needs {role}")
            request[_TOKEN] = token
            if role is not Role.READ and not plane.replication.leading:
                leader = next((r.api_url for r in plane.replication.peers if r.leader),
                              "unknown")
                return error(503, f"replica {plane.replication.replica} is not the leader; "
                                  f"send this to the leader ({leader})")
            try:
                if body:
                    request[_BODY] = await _json_object(request)
                return await handler(request)
            except BadInput as exc:
                return error(400, str(exc))
            except PolicyError as exc:
                return error(400, "invalid policy", problems=[str(p) for p in exc.problems])
            except (NotFound, UnknownServer, ArtifactNotFoundError) as exc:
                return error(404, str(exc))
            except (RolloutConflict, TransitionError, SlotInUse, MembershipError,
                    ArtifactExistsError, StackError) as exc:
                return error(409, str(exc))
            except (ConfigError, RegistryError, ArtifactError) as exc:
                return error(400, str(exc))
            except DeployError as exc:  # the servers failed it, not the request
                return error(422, str(exc))
            except StoreUnavailable as exc:
                return error(503, str(exc))
            except plane.store.ERRORS as exc:  # a read that could not reach the store
                return error(503, f"state store {plane.store.where} unreachable: {exc}")
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
