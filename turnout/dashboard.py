"""The live dashboard: a static page (``turnout/dashboard/``, no build step, no library
fetched at run time) and the data it shows, pushed as server-sent events.

    GET    /                   the page (no data in it: it signs in, then fetches)
    GET    /dashboard/<file>   its script and style
    POST   /dashboard/session  sign in: a bearer token, or {"code": ...} from
                               ``POST /dashboard/code``; sets an HttpOnly session cookie
    DELETE /dashboard/session  sign out
    POST   /dashboard/code     a one-time sign-in code (60 s) for a ``read`` session
    GET    /dashboard/state    everything the page shows, as JSON
    GET    /dashboard/events   the same, pushed (``text/event-stream``) whenever it changes

The data needs the ``read`` role, like ``/v1/status``: a session cookie or a bearer token.
``dashboard: {public: true}`` in the control plane's config opens it to anyone who reaches
the API (refused unless the API binds a loopback address). A revoked token's sessions stop
receiving events within a push interval (0.25 s).

Per-slot traffic (requests/s, p50/p99, error rate) over the last 10 s comes from Envoy's
access-log stream to the control plane; before that stream has data, from Prometheus,
queried at most once a second and only while a page is open; every 2 s the figures also
join per-slot time series over the last 3 minutes (``series``). The figures carry the time
they were measured (``traffic_at``); figures older than ``TRAFFIC_MAX_AGE_S`` are not sent
at all, so a page opened after a quiet spell never paints old traffic as current.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gates.metrics.builtins import BUILTINS
from gates.metrics.provider import MetricsError, NoData
from gates.metrics.sources import EnvoyStreamSource, MetricSource, PromQLSource, Query
from triton_slots.registry import Stage
from triton_slots.routing import SLOT_NAMES
from turnout.sessions import COOKIE, Session, SessionError, Sessions
from turnout.tokens import ApiToken, Role, bearer_secret, identify

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

STATIC = Path(__file__).with_name("dashboard")
FILES = {"app.js": "application/javascript", "style.css": "text/css"}
TRAFFIC = {"rps": "requests_rps", "p50_ms": "p50_latency_ms", "p99_ms": "p99_latency_ms",
           "error_rate": "error_rate"}
# Streaming models' figures, from the access-log stream only (Prometheus has none).
STREAM_TRAFFIC = {"ttft_p50_ms": "ttft_p50_ms", "itl_p99_ms": "itl_p99_ms",
                  "tokens_per_s": "tokens_per_s"}
SERIES_EVERY_S = 2.0  # one point of the per-slot time series every 2 s...
SERIES_POINTS = 90  # ...over the last 3 minutes (while a page is open)
WINDOW_S = 10.0
TRAFFIC_MAX_AGE_S = 3.0
AUDIT_ROWS = 150  # newest first; the page folds a step's gate rounds into one row
PUSH_INTERVAL_S = 0.25
MAX_CLIENTS = 32  # event streams open at once, in all
MAX_PER_CLIENT = 8  # from one address: one stranger cannot take every place
WRITE_TIMEOUT_S = 5.0  # a stream that does not read for this long is closed
PUBLIC = Session("public", "", Role.READ, float("inf"))


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    """A 401 whose message the API's middleware returns as ``{"error": message}``."""
    return web.HTTPUnauthorized(reason=message)


class Dashboard:
    """Assembles the page's state; keeps the Prometheus figures fresh while watched."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.traffic: dict[str, dict[str, float | None]] = {}
        self.traffic_error: str | None = "not measured yet"
        self._traffic_at = 0.0  # monotonic, for refreshing
        self._traffic_wall = 0.0  # the same moment, as a timestamp for the page
        self._clients = 0
        self._per_client: Counter[str] = Counter()
        self.series: deque[dict[str, Any]] = deque(maxlen=SERIES_POINTS)
        self._refreshing: asyncio.Task | None = None
        self.sessions = Sessions(plane.tokens)

    # ---- who may read -----------------------------------------------------------------
    def _bearer(self, request: web.Request) -> ApiToken | None:
        secret = bearer_secret(request.headers.get("Authorization", ""))
        if secret is None:
            return None
        token = identify(self.plane.tokens(), secret)
        if token is None:
            raise _unauthorized("unknown bearer token")
        return token

    def reader(self, request: web.Request) -> Callable[[], Session]:
        """Who reads: a check to repeat while serving (it raises once the token behind the
        session is revoked). 401 with the reason when nobody may."""
        if self.plane.config.dashboard_public:
            return lambda: PUBLIC
        token = self._bearer(request)
        if token is not None:  # a stream kept by a bearer ends with its token too
            standing = Session(token.name, token.sha256, token.role, float("inf"))
            return lambda: self.sessions.current(standing)
        session_id = request.cookies.get(COOKIE, "")
        try:
            self.sessions.check(session_id)
        except SessionError as exc:
            self.plane.telemetry.api_refused.labels(reason="unauthenticated").inc()
            raise _unauthorized(str(exc)) from None
        return lambda: self.sessions.check(session_id)

    async def sign_in(self, request: web.Request) -> web.Response:
        token = self._bearer(request)
        if token is not None:
            session_id, session = self.sessions.open(token)
        else:
            code = await _code_from(request)
            try:
                session_id, session = self.sessions.redeem(code)
            except SessionError as exc:
                self.plane.telemetry.api_refused.labels(reason="unauthenticated").inc()
                raise _unauthorized(str(exc)) from None
        response = web.json_response({"token": session.token_name, "role": str(session.role),
                                      "expires_at": session.expires_at})
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict",
                            secure=request.secure, path="/dashboard",
                            max_age=int(self.sessions.ttl_s))
        return response

    async def sign_out(self, request: web.Request) -> web.Response:
        ended = self.sessions.close(request.cookies.get(COOKIE, ""))
        response = web.json_response({"signed_out": ended})
        response.del_cookie(COOKIE, path="/dashboard")
        return response

    async def new_code(self, request: web.Request) -> web.Response:
        token = self._bearer(request)
        if token is None:
            raise _unauthorized("missing bearer token")
        return web.json_response({"code": self.sessions.code(token),
                                  "expires_in": self.sessions.code_ttl_s}, status=201)

    # ---- data -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        plane = self.plane
        status = plane.status()
        store = plane.store
        history = [e.as_dict() for e in store.history(limit=200)]  # oldest first
        rollout = status.get("rollout") or {}
        now = time.time()
        age = now - self._traffic_wall
        fresh = age <= TRAFFIC_MAX_AGE_S
        rounds, previous = rollout.get("rounds", []), rollout.get("previous_rounds", [])
        return {
            "at": now,
            "status": status,
            "models": self._models(),
            "traffic": self.traffic if fresh else {},
            "traffic_at": self._traffic_wall if fresh else None,
            "traffic_error": self.traffic_error if fresh else
            self.traffic_error or f"traffic not measured for {age:.0f} s",
            "weights_history": [
                {"at": e["at"], "weights": e["weights"], "actor": e["actor"]}
                for e in history if e["kind"] == "weights" and e["weights"]][-60:],
            "audit": history[::-1][:AUDIT_ROWS],
            # While a step waits (approval, or no round yet) the last step's rounds stay.
            "rounds": rounds or previous,
            "rounds_of": "this step" if rounds or not previous else "the previous step",
            "series": list(self.series),
        }

    def _models(self) -> dict[str, list[dict[str, Any]]]:
        registry = self.plane.controller.registry
        served: dict[str, list[dict[str, Any]]] = {slot: [] for slot in SLOT_NAMES}
        try:
            records = registry.list()
        except Exception as exc:  # a broken registry must not blank the page
            return {"error": [{"message": str(exc)}]}
        for record in records:
            if record.slot in served and record.stage in (Stage.ACTIVE, Stage.STANDBY,
                                                          Stage.CANDIDATE):
                served[record.slot].append({"ref": record.ref, "digest": record.digest,
                                            "stage": str(record.stage)})
        return served

    async def refresh_traffic(self) -> None:
        """Per-slot figures from Envoy's access-log stream once it has seen requests, else
        from Prometheus; the same builtins either way (the Prometheus client blocks: off
        the loop)."""
        windows = self.plane.windows
        source: MetricSource
        if any(windows.requests(slot, WINDOW_S) for slot in SLOT_NAMES):
            source = EnvoyStreamSource(windows)
        elif self.plane.controller.provider is not None:
            source = PromQLSource(self.plane.controller.provider)
        else:
            self.traffic_error = "no Prometheus configured"
            return

        def query() -> tuple[dict[str, dict[str, float | None]], str | None]:
            figures: dict[str, dict[str, float | None]] = {}
            error = None
            for slot in SLOT_NAMES:
                # Requests that ended in a client-caused status: apart from the error rate.
                figures[slot] = {"client_errors_rps": windows.client_errors(
                    slot, WINDOW_S) / WINDOW_S if isinstance(source, EnvoyStreamSource)
                    else None}
                streaming = STREAM_TRAFFIC if isinstance(source, EnvoyStreamSource) else {}
                for key, builtin in {**TRAFFIC, **streaming}.items():
                    try:
                        figures[slot][key] = source.value(
                            Query(builtin, BUILTINS.get(builtin, "")), slot=slot,
                            window_s=WINDOW_S)
                    except NoData:
                        figures[slot][key] = None
                    except MetricsError as exc:
                        figures[slot][key] = None
                        error = f"Prometheus unavailable: {exc}"
            return figures, error

        self.traffic, self.traffic_error = await asyncio.to_thread(query)
        self._traffic_at = time.monotonic()
        self._traffic_wall = time.time()
        if not self.series or self._traffic_wall - self.series[-1]["at"] >= SERIES_EVERY_S:
            self.series.append({"at": self._traffic_wall, **self.traffic})

    async def _keep_fresh(self) -> None:
        while self._clients > 0:
            with contextlib.suppress(Exception):
                await self.refresh_traffic()
            await asyncio.sleep(1.0)

    # ---- HTTP -----------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html",
                                headers={"Content-Type": "text/html; charset=utf-8",
                                         "Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound(reason=f"no dashboard file {name!r}")
        return web.FileResponse(STATIC / name, headers={"Content-Type": FILES[name],
                                                        "Cache-Control": "no-store"})

    async def _fresh_traffic(self) -> None:
        if time.monotonic() - self._traffic_at > 1.0:
            with contextlib.suppress(Exception):
                await self.refresh_traffic()

    async def state_json(self, request: web.Request) -> web.Response:
        self.reader(request)
        await self._fresh_traffic()
        return web.json_response(self.state())

    async def events(self, request: web.Request) -> web.StreamResponse:
        reader = self.reader(request)
        client = request.remote or "unknown"
        if self._clients >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(reason="too many dashboard clients")
        if self._per_client[client] >= MAX_PER_CLIENT:
            raise web.HTTPTooManyRequests(reason=f"{MAX_PER_CLIENT} dashboard streams from "
                                                 f"{client} already open")
        self._clients += 1  # counted before the first await: no one slips past the caps
        self._per_client[client] += 1
        last = ""
        last_sent = 0.0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        try:
            await response.prepare(request)
            await self._fresh_traffic()  # the first event carries figures measured now
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.create_task(self._keep_fresh())
            while True:
                try:
                    reader()
                except SessionError as exc:  # revoked while watching
                    end = json.dumps({"error": str(exc)})
                    await _write(response, f"event: signed-out\ndata: {end}\n\n")
                    break
                state = self.state()
                body = json.dumps({k: v for k, v in state.items() if k != "at"},
                                  default=str, sort_keys=True)
                now = time.monotonic()
                if body != last or now - last_sent > 5.0:  # changes at once, else keep-alive
                    state_text = json.dumps(state, default=str)
                    await _write(response, f"event: state\ndata: {state_text}\n\n")
                    last, last_sent = body, now
                await asyncio.sleep(PUSH_INTERVAL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except TimeoutError:  # not reading: closed, its place freed
            if request.transport is not None:
                request.transport.abort()
        finally:
            self._clients -= 1
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
        return response


async def _write(response: web.StreamResponse, event: str) -> None:
    """One event; TimeoutError when the reader has not taken the last ones for
    ``WRITE_TIMEOUT_S`` (the connection is then closed)."""
    await asyncio.wait_for(response.write(event.encode()), WRITE_TIMEOUT_S)


def add_routes(app: web.Application, plane: ControlPlane) -> Dashboard:
    dashboard = Dashboard(plane)
    app.add_routes([
        web.get("/", dashboard.page),
        web.post("/dashboard/session", dashboard.sign_in),
        web.delete("/dashboard/session", dashboard.sign_out),
        web.post("/dashboard/code", dashboard.new_code),
        web.get("/dashboard/state", dashboard.state_json),
        web.get("/dashboard/events", dashboard.events),
        web.get("/dashboard/{name}", dashboard.static),
    ])
    return dashboard


async def _code_from(request: web.Request) -> str:
    """The sign-in code of a ``{"code": "..."}`` body; 401 naming what is missing."""
    try:
        body = json.loads((await request.read()).decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not 0 < len(code) <= 200:
        raise _unauthorized("sign in with a bearer token (Authorization header) or a body "
                            '{"code": "..."} from `turnout dashboard`')
    return code
