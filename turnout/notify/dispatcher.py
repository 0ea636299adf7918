"""Delivery from the outbox: notices are stored with the decision they tell of (one
transaction, see ``Store.commit``), and the leader delivers them from the store, one worker
per receiver, in order, retried with exponential back-off. A control plane killed with
notices undelivered loses none: after its restart, or on the replica that takes over, the
store still holds them and the retry schedule (tries, next try). Delivery is at least once
(a receiver may see a notice again after a crash between its answer and the record of
it); every delivery carries the notice's id as its ``Idempotency-Key`` so a receiver can
drop the repeat. A rollout never waits for a receiver."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from turnout.errors import ConfigError
from turnout.notify.events import Notification, NotificationKind
from turnout.notify.webhook import WebhookTarget
from turnout.store import Delivery, DeliveryState, Fenced, Outgoing, Store, StoreUnavailable

log = logging.getLogger("turnout.notify")
POLL_S = 1.0  # how often the leader looks for notices due (a new decision wakes it at once)


def receiver_key(target: Mapping[str, Any]) -> str:
    """Which queue a receiver's notices go through: one per distinct receiver settings."""
    return hashlib.sha256(json.dumps(target, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def outgoing(notices: Iterable[Notification], targets: Iterable[Mapping[str, Any]],
             where: Iterable[str]) -> list[Outgoing]:
    """The deliveries of ``notices`` to every receiver (``targets``, as configured; ``where``
    names each for messages) that wants them. A receiver that is not valid raises
    :class:`ConfigError`."""
    notices = list(notices)
    out = []
    for settings, name in zip(targets, where, strict=True):
        target = WebhookTarget.from_dict(settings, name)
        key = receiver_key(settings)
        out += [Outgoing(key, dict(settings), n.as_dict()) for n in notices if target.wants(n)]
    return out


def _notice(data: Mapping[str, Any]) -> Notification:
    return Notification(**{**data, "kind": NotificationKind(data["kind"])})


class Notifier:
    """Delivers the store's pending notices while this control plane leads (:meth:`start`
    .. :meth:`stop`). ``attempts`` tries per notice with back-off from ``backoff_s``
    doubling to ``max_backoff_s``; ``timeout_s`` per attempt. ``on_outcome`` hears
    "delivered", "retried" or "failed" (for metrics)."""

    def __init__(self, store: Store, *, attempts: int = 10, backoff_s: float = 0.5,
                 max_backoff_s: float = 60.0, timeout_s: float = 5.0,
                 on_outcome: Callable[[str], None] = lambda _: None) -> None:
        self.store = store
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.on_outcome = on_outcome
        self._workers: dict[str, asyncio.Task] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._fenced = False  # a record was refused: another replica leads

    def start(self) -> None:
        """Begin delivering (the leader; call on the loop)."""
        self._fenced = False  # leading again: under a new epoch
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="notify-outbox")

    def wake(self) -> None:
        """New notices were stored: look now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._fenced:
            self._wake.clear()
            try:  # the receivers with something pending (one worker each)
                receivers = await asyncio.to_thread(self.store.pending_receivers)
            except self.store.ERRORS as exc:
                log.warning("outbox: cannot read pending notices: %s", exc)
                receivers = []
            for receiver in receivers:
                worker = self._workers.get(receiver)
                if worker is None or worker.done():
                    self._workers[receiver] = asyncio.create_task(
                        self._serve(receiver), name=f"notify-{receiver}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)

    async def _serve(self, receiver: str) -> None:
        """Deliver ``receiver``'s notices in order until none is pending."""
        while True:
            try:
                heads = await asyncio.to_thread(self.store.pending_deliveries, 1,
                                                receiver=receiver)
            except self.store.ERRORS as exc:
                log.warning("outbox: cannot read pending notices: %s", exc)
                return
            if not heads:
                return
            delivery = heads[0]
            wait = delivery.next_at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._attempt(delivery)
            except Fenced as exc:  # another replica leads: it delivers from now on
                log.error("outbox: %s; this replica stops delivering", exc)
                self._fenced = True
                return
            except StoreUnavailable as exc:  # the store fails: tried again at the next poll
                log.error("outbox: cannot record a delivery (%s)", exc)
                return

    async def _attempt(self, delivery: Delivery) -> None:
        attempt = delivery.attempts + 1
        try:
            target = WebhookTarget.from_dict(delivery.target, "webhook")
            notice = _notice(delivery.notice)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            await self._record(delivery, DeliveryState.FAILED, attempt, error=str(exc))
            self.on_outcome("failed")
            log.error("outbox: notice %d cannot be sent: %s", delivery.seq, exc)
            return
        problem = await self._post(target, notice)
        if not problem:
            await self._record(delivery, DeliveryState.DELIVERED, attempt)
            self.on_outcome("delivered")
            return
        if attempt >= self.attempts:
            await self._record(delivery, DeliveryState.FAILED, attempt, error=problem)
            self.on_outcome("failed")
            log.error("webhook %s: %s for rollout %s not delivered after %d attempts: %s",
                      target.shown, notice.kind, notice.rollout, attempt, problem)
            return
        delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        await self._record(delivery, DeliveryState.PENDING, attempt,
                           next_at=time.time() + delay, error=problem)
        self.on_outcome("retried")
        log.warning("webhook %s: %s (%s, attempt %d/%d); retrying in %.1fs", target.shown,
                    notice.kind, problem, attempt, self.attempts, delay)

    async def _record(self, delivery: Delivery, state: DeliveryState, attempts: int, *,
                      next_at: float = 0.0, error: str = "") -> None:
        await asyncio.to_thread(self.store.record_delivery, delivery.seq, state,
                                attempts=attempts, next_at=next_at, error=error)

    async def _post(self, target: WebhookTarget, notice: Notification) -> str:
        """One attempt; what went wrong ("" when delivered)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        body = target.body(notice)
        try:
            headers = target.headers(notice, body, f"{time.time():.3f}")
            async with self._session.post(target.url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return str(exc) or type(exc).__name__

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) until no notice is pending or every worker is idle;
        used at shutdown and in tests."""
        deadline = time.monotonic() + timeout
        self.wake()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            busy = [w for w in self._workers.values() if not w.done()]
            if not busy and not await asyncio.to_thread(self.store.pending_deliveries, 1):
                return
            if not busy:
                self.wake()

    async def stop(self) -> None:
        """Stop delivering (no longer leading, or shutting down); what is pending stays in
        the store for the next leader."""
        tasks = [t for t in (self._task, *self._workers.values()) if t is not None]
        self._task = None
        self._workers = {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()
