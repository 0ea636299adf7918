"""Delivery: one worker per receiver, in order, retried with exponential back-off; the
rollout only ever puts a notice on a bounded queue and never waits for a receiver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import aiohttp

from turnout.notify.events import Notification
from turnout.notify.webhook import WebhookTarget

log = logging.getLogger("turnout.notify")
QUEUE_LIMIT = 1000


class _Worker:
    def __init__(self, target: WebhookTarget) -> None:
        self.target = target
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.task: asyncio.Task | None = None


class Notifier:
    """Sends notices to webhook receivers. ``attempts`` tries per notice with back-off from
    ``backoff_s`` doubling to ``max_backoff_s``; ``timeout_s`` per attempt. ``on_outcome``
    hears "delivered", "retried", "failed" or "dropped" (for metrics)."""

    def __init__(self, *, attempts: int = 6, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 timeout_s: float = 5.0,
                 on_outcome: Callable[[str], None] = lambda _: None) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.on_outcome = on_outcome
        self._workers: dict[WebhookTarget, _Worker] = {}
        self._session: aiohttp.ClientSession | None = None

    def notify(self, notices: Iterable[Notification], targets: Iterable[WebhookTarget]
               ) -> None:
        """Queue each notice for each receiver that wants it. Returns at once."""
        notices = list(notices)
        for target in targets:
            worker = self._workers.get(target)
            if worker is None:
                worker = self._workers[target] = _Worker(target)
            for notice in notices:
                if not target.wants(notice):
                    continue
                if worker.queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        worker.queue.get_nowait()
                    self.on_outcome("dropped")
                    log.error("webhook %s: queue full, oldest notice dropped", target.shown)
                worker.queue.put_nowait(notice)
            if worker.task is None or worker.task.done():
                worker.task = asyncio.create_task(self._run(worker))

    async def _run(self, worker: _Worker) -> None:
        while not worker.queue.empty():
            notice = worker.queue.get_nowait()
            await self._deliver(worker.target, notice)

    async def _deliver(self, target: WebhookTarget, notice: Notification) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        body = target.body(notice)
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            problem = ""
            try:
                headers = target.headers(notice, body, f"{time.time():.3f}")
                async with self._session.post(target.url, data=body,
                                              headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.on_outcome("delivered")
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt == self.attempts:
                break
            self.on_outcome("retried")
            log.warning("webhook %s: %s (%s, attempt %d/%d); retrying in %.1fs", target.shown,
                        notice.kind, problem, attempt, self.attempts, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        self.on_outcome("failed")
        log.error("webhook %s: %s for rollout %s not delivered after %d attempts: %s",
                  target.shown, notice.kind, notice.rollout, self.attempts, problem)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) for queued notices; used at shutdown and in tests."""
        tasks = [w.task for w in self._workers.values() if w.task and not w.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self) -> None:
        for worker in self._workers.values():
            if worker.task is not None:
                worker.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker.task
        if self._session is not None:
            await self._session.close()
