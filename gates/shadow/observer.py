"""A shadow stage's observer: one tap session per proxy (``gates.shadow.tap``), every
recorded exchange decoded and paired, the pairs compared (``gates.shadow.compare``). Runs
in the control plane's event loop, off the live path: clients' requests never wait for it
(Envoy sends each copy and drops its answer itself). A session that ends (a proxy
restarting) is reopened after a second; the failures are counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import aiohttp

from gates.shadow.compare import Pairer, ShadowStats
from gates.shadow.exchange import decode
from gates.shadow.tap import MAX_BODY_BYTES, traces
from gates.validation.settings import ParitySettings

log = logging.getLogger(__name__)


class ShadowObserver:
    def __init__(self, admin_urls: Sequence[str], settings: ParitySettings | None = None, *,
                 timeout_s: float = 5.0, max_body_bytes: int = MAX_BODY_BYTES,
                 clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        if not admin_urls:
            raise ValueError("a shadow stage reads the proxies' taps: no admin URL given "
                             "(shadow_admins in the control-plane configuration)")
        self.admin_urls = tuple(admin_urls)
        self.pairer = Pairer(settings or ParitySettings(), timeout_s=timeout_s)
        self.max_body_bytes, self.clock = max_body_bytes, clock
        self.session_errors: dict[str, str] = {}
        self.connected: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._http: aiohttp.ClientSession | None = None

    @property
    def stats(self) -> ShadowStats:
        """The comparison so far, as a copy (unanswered copies expire every 0.5 s)."""
        return self.pairer.stats.snapshot()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._read(url)) for url in self.admin_urls]
        self._tasks.append(asyncio.create_task(self._expire()))

    async def wait_connected(self, timeout_s: float = 5.0) -> bool:
        """True once every proxy's tap session is open (traces recorded from then on)."""
        deadline = self.clock() + timeout_s
        while len(self.connected) < len(self.admin_urls) and self.clock() < deadline:
            await asyncio.sleep(0.02)
        return len(self.connected) == len(self.admin_urls)

    async def _read(self, url: str) -> None:
        assert self._http is not None
        while True:
            try:
                async for trace in traces(self._http, url, max_body_bytes=self.max_body_bytes,
                                          on_open=lambda u=url: self.connected.add(u)):
                    try:
                        exchange = decode(trace)
                    except Exception:  # one odd trace never ends the session
                        log.exception("shadow tap on %s: a trace could not be read", url)
                        self.pairer.stats.undecodable += 1
                        continue
                    if exchange is not None:
                        self.pairer.add(exchange, self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the proxy went away: say so, try again
                self.session_errors[url] = str(exc)[:200]
                log.warning("shadow tap on %s ended: %s", url, exc)
            self.connected.discard(url)
            await asyncio.sleep(1.0)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.pairer.expire(self.clock())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.close()
