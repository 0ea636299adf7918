"""Webhook receivers for integration tests: real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class Receivers:
    """A good receiver, a hanging one and one that answers 503 until ``accepting`` (its
    deliveries recorded in ``flaky``), on a loop thread of their own."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.flaky: list[tuple[dict[str, str], bytes]] = []
        self.accepting = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, self.port = asyncio.run_coroutine_threadsafe(self._start(),
                                                                  self.loop).result(10)

    async def _good(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def _flaky(self, request: web.Request) -> web.Response:
        if not self.accepting:
            return web.Response(status=503)
        self.flaky.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def _hang(self, request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response(status=204)

    async def _start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/good", self._good)
        app.router.add_post("/hang", self._hang)
        app.router.add_post("/flaky", self._flaky)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
