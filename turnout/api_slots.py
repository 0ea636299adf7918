"""The API's slot routes: each slot's servers, and servers added or removed by hand.

    GET    /v1/slots                                 each slot's source, weight and servers
    POST   /v1/slots/<slot>/endpoints                {"host", "grpc_port", "http_port",
                                                      "metrics_port"} (role admin)
    DELETE /v1/slots/<slot>/endpoints/<host:grpc_port>                  (role admin)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from triton_slots.slot import Endpoint
from turnout.api_common import BadInput, NotFound, body_of, fields, needs, plane_of, token_of
from turnout.slots import describe as describe_slots
from turnout.tokens import Role

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane


def _slots_view(plane: ControlPlane) -> dict[str, Any]:
    return describe_slots(plane.members, plane.weights, lambda e: plane.health.get(e, False))


@needs(Role.READ)
async def _slots(request: web.Request) -> web.Response:
    return web.json_response(_slots_view(plane_of(request)))


#: Triton's own default ports, for fields left out.
TRITON_PORTS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def valid_host(host: str) -> bool:
    """An IPv4 or IPv6 address, or a DNS name (dot-separated labels of 1..63 letters,
    digits, '-' or '_', not starting or ending with '-')."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return 0 < len(host) <= 253 and all(_LABEL.match(label) for label in
                                         host.removesuffix(".").split("."))


def slot_name(request: web.Request) -> str:
    name = request.match_info["slot"]
    plane = plane_of(request)
    if name not in plane.members.slots:
        raise NotFound(f"no slot {name[:40]!r} here; slots: "
                            f"{', '.join(sorted(plane.members.slots))}")
    return name


def endpoint_from(body: Mapping[str, Any]) -> Endpoint:
    """A server from a request body; :class:`BadInput` names the field."""
    fields(body, ("host", *TRITON_PORTS))
    host = body.get("host")
    if not isinstance(host, str) or not valid_host(host):
        raise BadInput(f"field 'host' must be a DNS name or an IP address, got "
                       f"{str(host)[:60]!r}")
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
    plane = plane_of(request)
    slot = slot_name(request)
    endpoint = endpoint_from(body_of(request))
    plane.slot_servers.add(plane.members, slot, endpoint, actor=token_of(request).name)
    return web.json_response(_slots_view(plane)[slot], status=202)


@needs(Role.ADMIN)
async def _remove_endpoint(request: web.Request) -> web.Response:
    plane = plane_of(request)
    slot = slot_name(request)
    address = request.match_info["address"]
    plane.slot_servers.remove(plane.members, slot, address[:300], actor=token_of(request).name,
                              weights=plane.weights)
    return web.json_response(_slots_view(plane)[slot])




def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/v1/slots", _slots),
        web.post("/v1/slots/{slot}/endpoints", _add_endpoint),
        web.delete("/v1/slots/{slot}/endpoints/{address}", _remove_endpoint),
    ])
