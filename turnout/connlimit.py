"""Limits for the API's listening socket, where anyone on the network can connect: at most
``total`` connections at once and ``per_client`` from one address, and a connection must
finish its first request's head within ``head_timeout_s`` (an idle or trickling connection
is closed, not kept). Connections over a limit are closed at once and counted; what is
refused is logged at most once per ``LOG_EVERY_S`` per reason.

    site = GuardedSite(runner, host, port, limits=ConnectionLimits(), refused=callback)

The same module quiets the event loop's own error storm when accepting fails (out of file
descriptors: asyncio logs every failed accept, 140 MB a minute was measured): one line per
``LOG_EVERY_S`` with the count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("turnout.api")
LOG_EVERY_S = 10.0
_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    total: int = 1024
    per_client: int = 128
    head_timeout_s: float = 10.0


class _Quiet:
    """Logs one line per reason per ``LOG_EVERY_S``, saying how many were not logged."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: Counter[str] = Counter()

    def __call__(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
            self._skipped[reason] += 1
            return
        skipped = self._skipped.pop(reason, 0)
        self._last[reason] = now
        log.warning("%s%s", message, f" ({skipped} more since the last such line)"
                    if skipped else "")


class ConnectionGuard:
    """Counts live connections per client address; wraps aiohttp's protocol factory."""

    def __init__(self, limits: ConnectionLimits,
                 refused: Callable[[str], None] = lambda _reason: None) -> None:
        self.limits = limits
        self.refused = refused
        self.live: Counter[str] = Counter()
        self.total = 0
        self._say = _Quiet()

    def admit(self, client: str) -> str | None:
        """None when ``client`` may open one more connection (then counted), else why not."""
        if self.total >= self.limits.total:
            return "connections"
        if self.live[client] >= self.limits.per_client:
            return "client_connections"
        self.live[client] += 1
        self.total += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        self.live[client] -= 1
        if self.live[client] <= 0:
            del self.live[client]

    def refuse(self, reason: str, client: str) -> None:
        self.refused(reason)
        limit = self.limits.total if reason == "connections" else self.limits.per_client
        what = "connections in all" if reason == "connections" else \
            f"connections from {client}"
        self._say(reason, f"API: refused a connection from {client}: {limit} {what} "
                          "already open")

    def slow(self, client: str) -> None:
        self.refused("slow_request_head")
        self._say("slow_request_head", f"API: closed a connection from {client}: no "
                  f"complete request head within {self.limits.head_timeout_s:g} s")

    def factory(self, inner: Callable[[], asyncio.BaseProtocol]
                ) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, inner)


class _Guarded(asyncio.Protocol):
    """One connection: admitted or closed, then aiohttp's own protocol behind it."""

    def __init__(self, guard: ConnectionGuard,
                 inner: Callable[[], asyncio.BaseProtocol]) -> None:
        self.guard = guard
        self._make = inner
        self.inner: Any = None
        self.client = ""
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        reason = self.guard.admit(self.client)
        if reason is not None:
            self.guard.refuse(reason, self.client)
            transport.abort()  # type: ignore[attr-defined]
            return
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(
            self.guard.limits.head_timeout_s, self._too_slow)
        self.inner = self._make()
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._timer = None
        self.guard.slow(self.client)
        self.transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:  # still waiting for the first request's head
            seen = self._tail + data
            if _HEAD_END in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is None:
            return  # refused: never counted
        if self._timer is not None:
            self._timer.cancel()
        self.guard.release(self.client)
        self.inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass a :class:`ConnectionGuard` first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self.guard.limits.head_timeout_s if self._ssl_context
            else None)
        self._bound_port = self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        return int(self._bound_port)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """The loop logs every failed ``accept()`` (out of file descriptors: thousands a
    second); keep one line per ``LOG_EVERY_S`` for those, everything else as before."""
    say = _Quiet()
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            say("accept", f"accepting connections failed: {context.get('exception')}")
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
