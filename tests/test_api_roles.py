"""Every role against every route (docs/security.md, "Who may call what"), written out
here from that table: no token is a 401, a role below the route's is a 403, a role at or
above it gets past authorization; and the app has no route the table leaves out. The
routes are the real app's (``build_app``) over a stand-in plane that answers nothing past
authorization (a handler that runs anyway fails, which is neither 401 nor 403)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from turnout.api import build_app
from turnout.tokens import Role, mint

NOBODY, ANY = "nothing", "any token"
#: (method, route as registered, a concrete path) -> the role it needs (from the doc).
TABLE = {
    ("GET", "/healthz", "/healthz"): NOBODY,
    ("GET", "/metrics", "/metrics"): NOBODY,
    ("GET", "/openapi.json", "/openapi.json"): NOBODY,
    ("GET", "/", "/"): NOBODY,
    ("GET", "/dashboard/{name}", "/dashboard/app.js"): NOBODY,
    ("POST", "/dashboard/session", "/dashboard/session"): ANY,  # or a one-time code
    ("DELETE", "/dashboard/session", "/dashboard/session"): NOBODY,
    ("POST", "/dashboard/code", "/dashboard/code"): ANY,
    ("GET", "/dashboard/state", "/dashboard/state"): Role.READ,
    ("GET", "/dashboard/events", "/dashboard/events"): Role.READ,
    ("GET", "/v1/status", "/v1/status"): Role.READ,
    ("GET", "/v1/rollouts/current", "/v1/rollouts/current"): Role.READ,
    ("GET", "/v1/history", "/v1/history"): Role.READ,
    ("GET", "/v1/slots", "/v1/slots"): Role.READ,
    ("GET", "/v1/models", "/v1/models"): Role.READ,
    ("GET", "/v1/models/{name}/{version}", "/v1/models/m/v1"): Role.READ,
    ("POST", "/v1/rollouts", "/v1/rollouts"): Role.OPERATE,
    ("POST", "/v1/rollouts/current/{command}", "/v1/rollouts/current/pause"): Role.OPERATE,
    ("PUT", "/v1/models/{name}/{version}", "/v1/models/m/v1"): Role.OPERATE,
    ("POST", "/v1/models/{name}/{version}/deploy", "/v1/models/m/v1/deploy"): Role.OPERATE,
    ("POST", "/v1/models/{name}/{version}/validate", "/v1/models/m/v1/validate"):
        Role.OPERATE,
    ("POST", "/v1/traffic", "/v1/traffic"): Role.ADMIN,
    ("POST", "/v1/slots/{slot}/endpoints", "/v1/slots/green/endpoints"): Role.ADMIN,
    ("DELETE", "/v1/slots/{slot}/endpoints/{address}", "/v1/slots/green/endpoints/h:1"):
        Role.ADMIN,
}
ORDER = [Role.READ, Role.OPERATE, Role.ADMIN]


class _Counter:
    def labels(self, **_labels: str) -> _Counter:
        return self

    def inc(self, _n: float = 1) -> None:
        pass


def _plane(tokens):  # type: ignore[no-untyped-def]
    return SimpleNamespace(
        tokens=lambda: tokens,
        telemetry=SimpleNamespace(api_refused=_Counter()),
        replication=SimpleNamespace(leading=True, peers=[], replica="r"),
        config=SimpleNamespace(dashboard_public=False))


@pytest.fixture
async def api():
    minted = {role: mint(f"t-{role}", role) for role in ORDER}
    app = build_app(_plane(tuple(token for token, _ in minted.values())))  # type: ignore[arg-type]
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, {role: secret for role, (_, secret) in minted.items()}
    await client.close()


def test_the_table_lists_every_route_the_app_has():
    app = build_app(_plane(()))  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD"}
    assert routes == {(method, route) for method, route, _ in TABLE}


async def test_every_role_against_every_route(api):
    client, secrets = api
    wrong = []
    for (method, _route, path), needs in TABLE.items():
        callers = [None, *ORDER]
        for caller in callers:
            headers = {"Authorization": f"Bearer {secrets[caller]}"} if caller else {}
            if method in ("POST", "PUT"):
                headers["Content-Type"] = "application/json"
            async with client.request(method, path, headers=headers, data=b"{}") as answer:
                status = answer.status
            if needs == NOBODY:
                expected = "past"
            elif caller is None:
                expected = 401
            elif needs == ANY or ORDER.index(caller) >= ORDER.index(needs):
                expected = "past"
            else:
                expected = 403
            got = "past" if status not in (401, 403) else status
            if got != expected:
                wrong.append((method, path, caller and str(caller), expected, status))
    assert wrong == [], wrong
