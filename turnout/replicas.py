"""Replicas: any number of control planes on one shared store, exactly one leading.

Every replica serves xDS to the proxies connected to it. The leader (the holder of the
store's leadership) runs rollouts; followers learn each change from the store's change
notices (and a one-second re-read, in case a notice is missed) and push the same weights
to their own proxies. Every replica records how many of its proxies hold its current route
version, so a step's convergence on the leader counts every proxy on every replica. When
the leader dies its session ends, another replica takes leadership within a poll, writes
the takeover to the audit log, and resumes the rollout exactly where the store says.

Leadership is fenced: each takeover begins a new epoch in the store and every write is
refused, in its own transaction, unless its epoch is still the store's. A leader deposed
before its next poll notices (its lock session cut, a pause) cannot store a decision, and
decisions are pushed only once stored; its first refused write makes it step down at once
(log and status say why).

With the embedded (SQLite) store there is one control plane and it leads from the start
(a second control plane on the same file fences the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from turnout.store import AuditEntry, Change, ReplicaReport, Store, StoreUnavailable
from turnout.weights import Weights
from xds_server import NodeOutcome

log = logging.getLogger("turnout.replicas")

POLL_S = 0.25  # how often a follower tries to take leadership (and the leader checks it)
REPORT_S = 1.0  # heartbeat: how often a replica reports when nothing changes
ALIVE_S = 3.0  # a replica not heard from for this long is not waited for


class Plane(Protocol):
    """What replication needs of the control plane."""

    weights: Weights

    async def apply_weights(self, weights: Weights, *, timeout: float | None = None,
                            quorum: float = 1.0, early: bool = False) -> Any: ...

    def sync_counts(self) -> tuple[str, int, int]: ...

    async def start_leading(self) -> None: ...

    async def stop_leading(self) -> None: ...


class Replication:
    def __init__(self, plane: Plane, store: Store, *, replica: str, api_url: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.plane = plane
        self.store = store
        self.replica = replica
        self.api_url = api_url
        self.clock = clock
        self.leading = False
        #: Every replica's last report as this one last read them (each heartbeat): what
        #: status pages show, without a database query per request.
        self.peers: list[ReplicaReport] = []
        self._stopping = threading.Event()
        self._dirty = asyncio.Event()
        self._report_due = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._transition = asyncio.Lock()
        #: Why this replica last stopped leading because another took over (status).
        self.deposed = ""

    @property
    def shared(self) -> bool:
        return self.store.replicated

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.store.on_fenced = lambda reason: loop.call_soon_threadsafe(self._fenced, reason)
        if not self.shared:
            # Leads from the start, with a new epoch: another control plane started on the
            # same file later fences this one (its writes are refused, so it stops).
            self.leading = await asyncio.to_thread(self.store.hold_leadership, self.replica)
            if self.leading:
                await self.plane.start_leading()
            return

        def on_change(change: Change) -> None:  # on the listening thread
            loop.call_soon_threadsafe(self._dirty.set)

        self._tasks = [
            asyncio.create_task(self._elect(), name="replica-elect"),
            asyncio.create_task(self._follow(), name="replica-follow"),
            asyncio.create_task(self._heartbeat(), name="replica-report"),
            asyncio.create_task(asyncio.to_thread(self.store.listen, on_change,
                                                  self._stopping.is_set),
                                name="replica-listen"),
        ]
        log.info("replica %s on shared store %s", self.replica, self.store.where)

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.shared:
            if self.leading:
                await self.plane.stop_leading()
                self.leading = False
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.resign)

    # ---- leadership ---------------------------------------------------------------------
    def _fenced(self, reason: str) -> None:
        """A write was refused: another replica leads. Stop acting now, not at the next
        poll (call on the loop)."""
        if self.leading and not self._stopping.is_set():
            task = asyncio.create_task(self._step_down(reason))
            self._tasks.append(task)

    async def _step_down(self, reason: str) -> None:
        async with self._transition:
            if not self.leading:
                return
            log.error("replica %s deposed: %s; stopping rollouts and pushes of its own",
                      self.replica, reason)
            self.deposed = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {reason}"
            self.leading = False
            await self.plane.stop_leading()

    async def _elect(self) -> None:
        while True:
            held = await asyncio.to_thread(self.store.hold_leadership, self.replica)
            async with self._transition:
                if held and not self.leading:
                    await self._take_over()
                elif not held and self.leading:
                    log.error("replica %s no longer holds leadership: stopping rollouts",
                              self.replica)
                    self.deposed = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: lost leadership"
                    self.leading = False
                    await self.plane.stop_leading()
            await asyncio.sleep(POLL_S)

    async def _take_over(self) -> None:
        reports = await asyncio.to_thread(self.store.replicas)
        previous = [r for r in reports if r.leader and r.replica != self.replica]
        await self._catch_up()
        self.leading = True
        now = self.clock()
        message = f"replica {self.replica} leads"
        if previous:
            message += "; took over from " + ", ".join(
                f"{r.replica} (last report {now - r.seen:.1f} s ago)" for r in previous)
        log.warning("%s", message)
        with contextlib.suppress(StoreUnavailable):
            await asyncio.to_thread(self.store.commit, audit=[AuditEntry(
                kind="leader", actor=f"replica:{self.replica}", message=message,
                weights=self.plane.weights.as_dict(),
                evidence={"previous": [r.as_dict() for r in previous]})])
        await self.report()
        await self.plane.start_leading()

    # ---- following ----------------------------------------------------------------------
    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), REPORT_S)
            self._dirty.clear()
            if not self.leading:
                async with self._transition:
                    if not self.leading:
                        await self._catch_up()

    async def _catch_up(self) -> None:
        """Serve the weights the store holds (a follower, or a replica about to lead)."""
        try:
            weights = await asyncio.to_thread(self.store.weights)
        except self.store.ERRORS as exc:
            log.warning("cannot read the shared store (%s); serving %s", exc,
                        self.plane.weights.as_dict())
            return
        if weights != self.plane.weights:
            log.info("store says %s: pushing to this replica's proxies", weights.as_dict())
            await self.plane.apply_weights(weights)
            await self.report()

    # ---- reports ------------------------------------------------------------------------
    def report_soon(self) -> None:
        """Proxies came or went: report within about 0.1 s (call on the loop)."""
        self._report_due.set()

    async def _heartbeat(self) -> None:
        while True:
            await self.report()
            try:
                self.peers = await asyncio.to_thread(self.store.replicas)
            except self.store.ERRORS as exc:
                log.warning("cannot read the other replicas' reports: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_due.wait(), REPORT_S)
                await asyncio.sleep(0.1)  # a burst of connections is one report, in sync
            self._report_due.clear()

    async def report(self) -> None:
        if not self.shared:
            return
        rds, proxies, in_sync = self.plane.sync_counts()
        report = ReplicaReport(self.replica, self.api_url, self.leading, rds, proxies,
                               in_sync, self.clock())
        try:
            await asyncio.to_thread(self.store.report, report)
        except self.store.ERRORS as exc:
            log.warning("cannot report to the shared store: %s", exc)

    async def fleet(self, rds_version: str, timeout: float) -> list[NodeOutcome]:
        """Wait until every other live replica (its database session exists and it
        reported in the last ``ALIVE_S``) reports all its proxies on ``rds_version`` (or
        ``timeout``), then one outcome per remote proxy: ``acked`` for those in sync. A
        replica killed outright is not waited for: its session ends with it."""
        if not self.shared:
            return []
        started = time.monotonic()
        deadline = started + timeout
        while True:
            now = self.clock()
            others = [r for r in await asyncio.to_thread(self.store.replicas)
                      if r.replica != self.replica and r.alive and now - r.seen < ALIVE_S]
            pending = [r for r in others if r.rds_version != rds_version
                       or r.in_sync < r.proxies]
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        outcomes = []
        for r in others:
            synced = r.in_sync if r.rds_version == rds_version else 0
            for i in range(r.proxies):
                ok = i < synced
                outcomes.append(NodeOutcome(f"{r.replica}/proxy-{i + 1}", -1,
                                            "acked" if ok else "timeout",
                                            elapsed if ok else None,
                                            "" if ok else f"replica {r.replica} reports "
                                            f"{r.in_sync}/{r.proxies} on {r.rds_version}"))
        return outcomes

    def describe(self) -> dict[str, Any]:
        return {"replica": self.replica, "leading": self.leading, "shared": self.shared,
                "store": self.store.where, "epoch": self.store.epoch,
                "deposed": self.deposed}
