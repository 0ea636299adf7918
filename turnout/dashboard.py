"""The live dashboard: a static page (``turnout/dashboard/``, no build step, no library
fetched at run time) and the data it shows, pushed as server-sent events.

    GET /                      the page (read-only without a token; actions need one)
    GET /dashboard/<file>      its script and style
    GET /dashboard/state       everything the page shows, as JSON
    GET /dashboard/events      the same, pushed (``text/event-stream``) whenever it changes

Per-slot traffic (requests/s, p50/p99, error rate) over the last 10 s comes from Envoy's
access-log stream to the control plane; before that stream has data, from Prometheus,
queried at most once a second and only while a page is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gates.metrics.builtins import BUILTINS
from gates.metrics.provider import MetricsError, NoData
from gates.metrics.sources import EnvoyStreamSource, MetricSource, PromQLSource, Query
from triton_slots.slot import SLOT_NAMES

if TYPE_CHECKING:
    from turnout.controlplane import ControlPlane

STATIC = Path(__file__).with_name("dashboard")
FILES = {"app.js": "application/javascript", "style.css": "text/css"}
TRAFFIC = {"rps": "requests_rps", "p50_ms": "p50_latency_ms", "p99_ms": "p99_latency_ms",
           "error_rate": "error_rate"}
WINDOW_S = 10.0
PUSH_INTERVAL_S = 0.25
MAX_CLIENTS = 32


class Dashboard:
    """Assembles the page's state; keeps the Prometheus figures fresh while watched."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.traffic: dict[str, dict[str, float | None]] = {}
        self.traffic_error: str | None = "not measured yet"
        self._traffic_at = 0.0
        self._clients = 0
        self._refreshing: asyncio.Task | None = None

    # ---- data -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        plane = self.plane
        status = plane.status()
        store = plane.store
        history = [e.as_dict() for e in store.history(limit=200)]  # oldest first
        rollout = status.get("rollout")
        return {
            "at": time.time(),
            "status": status,
            "models": self._models(),
            "traffic": self.traffic,
            "traffic_error": self.traffic_error,
            "weights_history": [
                {"at": e["at"], "weights": e["weights"], "actor": e["actor"]}
                for e in history if e["kind"] == "weights" and e["weights"]][-60:],
            "audit": history[::-1][:40],  # newest first
            "rounds": (rollout or {}).get("rounds", []),
        }

    def _models(self) -> dict[str, list[dict[str, Any]]]:
        registry = self.plane.controller.registry
        served: dict[str, list[dict[str, Any]]] = {slot: [] for slot in SLOT_NAMES}
        try:
            records = registry.list()
        except Exception as exc:  # a broken registry must not blank the page
            return {"error": [{"message": str(exc)}]}
        for record in records:
            if record.slot in served and record.stage in ("active", "standby", "validated",
                                                          "deployed", "candidate"):
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
                figures[slot] = {}
                for key, builtin in TRAFFIC.items():
                    try:
                        figures[slot][key] = source.value(
                            Query(builtin, BUILTINS[builtin]), slot=slot, window_s=WINDOW_S)
                    except NoData:
                        figures[slot][key] = None
                    except MetricsError as exc:
                        figures[slot][key] = None
                        error = f"Prometheus unavailable: {exc}"
            return figures, error

        self.traffic, self.traffic_error = await asyncio.to_thread(query)
        self._traffic_at = time.monotonic()

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

    async def state_json(self, request: web.Request) -> web.Response:
        if time.monotonic() - self._traffic_at > 1.0:
            with contextlib.suppress(Exception):
                await self.refresh_traffic()
        return web.json_response(self.state())

    async def events(self, request: web.Request) -> web.StreamResponse:
        if self._clients >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(reason="too many dashboard clients")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        self._clients += 1
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._keep_fresh())
        last = ""
        last_sent = 0.0
        try:
            while True:
                state = self.state()
                body = json.dumps({k: v for k, v in state.items() if k != "at"},
                                  default=str, sort_keys=True)
                now = time.monotonic()
                if body != last or now - last_sent > 5.0:  # changes at once, else keep-alive
                    state_text = json.dumps(state, default=str)
                    await response.write(f"event: state\ndata: {state_text}\n\n".encode())
                    last, last_sent = body, now
                await asyncio.sleep(PUSH_INTERVAL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients -= 1
        return response


def add_routes(app: web.Application, plane: ControlPlane) -> Dashboard:
    dashboard = Dashboard(plane)
    app.add_routes([
        web.get("/", dashboard.page),
        web.get("/dashboard/state", dashboard.state_json),
        web.get("/dashboard/events", dashboard.events),
        web.get("/dashboard/{name}", dashboard.static),
    ])
    return dashboard
