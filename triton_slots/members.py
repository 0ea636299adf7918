"""Each slot's servers, kept current while the slot serves. A server its source reports
for the first time is brought up to the slot's model set (same digests) and verified
before it is admitted, that is before EDS lists it and before it gets any traffic; a server
the source stops reporting is dropped at once. A source that fails (a DNS name that no
longer resolves) leaves the slot with the servers it had, and status says why.

Runs on the control plane's event loop; bringing a server up runs in a thread, under the
slot's lock, which a deploy to that slot also takes (a server is never admitted with the set
a deploy is replacing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from triton_slots.discovery import DiscoveryError, Resolver, ServerSource, choose
from triton_slots.slot import Endpoint, Slot

log = logging.getLogger("turnout.members")

#: bring_up(slot, endpoint) -> the refs it now serves; raises with the reason.
BringUp = Callable[[str, Endpoint], list[str]]
#: what the slot's set is now (to notice a deploy that changed it during a bring-up).
SetOf = Callable[[str], list[str]]


@dataclass
class _Slot:
    slot: Slot
    source: ServerSource
    next_at: float = 0.0
    error: str | None = None
    pending: set[Endpoint] = field(default_factory=set)
    failed: dict[Endpoint, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Members:
    def __init__(self, slots: dict[str, Slot], *, bring_up: BringUp, set_of: SetOf,
                 on_change: Callable[[], None], resolve: Resolver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = {name: _Slot(slot, choose(slot, resolve=resolve))
                       for name, slot in slots.items()}
        self._bring_up = bring_up
        self._set_of = set_of
        self._on_change = on_change
        self._clock = clock
        self._tasks: set[asyncio.Task] = set()

    def slot(self, name: str) -> Slot:
        return self._slots[name].slot

    @property
    def slots(self) -> dict[str, Slot]:
        return {name: state.slot for name, state in self._slots.items()}

    @contextlib.contextmanager
    def deploying(self, name: str) -> Iterator[None]:
        """Held by a deploy to slot ``name`` (from its thread): no server is admitted with
        the old set meanwhile."""
        state = self._slots.get(name)
        if state is None:
            yield
            return
        with state.lock:
            yield

    def _set(self, name: str, endpoints: tuple[Endpoint, ...]) -> None:
        state = self._slots[name]
        state.slot = dataclasses.replace(state.slot, endpoints=endpoints)

    async def refresh(self) -> None:
        """One look at every slot whose interval has passed (a static list answers what it
        always did: nothing to do)."""
        now = self._clock()
        for name, state in self._slots.items():
            if now < state.next_at:
                continue
            state.next_at = now + state.source.interval_s
            try:
                found = await asyncio.to_thread(state.source.servers)
            except DiscoveryError as exc:
                if state.error != str(exc):
                    log.error("slot %s keeps its %d server(s): %s", name,
                              len(state.slot.endpoints), exc)
                state.error = str(exc)
                continue
            state.error = None
            admitted = state.slot.endpoints
            gone = [e for e in admitted if e not in found]
            if gone:
                log.warning("slot %s: server(s) gone, out of EDS now: %s", name,
                            ", ".join(e.grpc_address for e in gone))
                self._set(name, tuple(e for e in admitted if e in found))
                self._on_change()
            for endpoint in found:
                if endpoint not in admitted and endpoint not in state.pending:
                    state.pending.add(endpoint)
                    task = asyncio.create_task(self._admit(name, endpoint))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _admit(self, name: str, endpoint: Endpoint) -> None:
        state = self._slots[name]
        started = time.monotonic()
        try:
            refs = await asyncio.to_thread(self._locked_bring_up, name, endpoint)
        except Exception as exc:
            state.failed[endpoint] = str(exc)
            log.error("slot %s: %s not admitted (retried in %.0fs): %s", name,
                      endpoint.grpc_address, state.source.interval_s, exc)
            return
        finally:
            state.pending.discard(endpoint)
        if refs is None:  # the set changed meanwhile: the next look tries again
            return
        state.failed.pop(endpoint, None)
        current = state.slot.endpoints
        if endpoint not in current:
            self._set(name, (*current, endpoint))
            log.info("slot %s: %s admitted with %s in %.1fs", name, endpoint.grpc_address,
                     ", ".join(refs) or "no model", time.monotonic() - started)
            self._on_change()

    def _locked_bring_up(self, name: str, endpoint: Endpoint) -> list[str] | None:
        with self._slots[name].lock:
            before = self._set_of(name)
            refs = self._bring_up(name, endpoint)
            return refs if self._set_of(name) == before else None

    async def run(self, tick_s: float = 0.2) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug here must not stop discovery for good
                log.exception("slot discovery failed; trying again")
            await asyncio.sleep(tick_s)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def describe(self) -> dict[str, dict[str, object]]:
        return {name: {"source": state.source.describe(),
                       "servers": [e.grpc_address for e in state.slot.endpoints],
                       "pending": sorted(e.grpc_address for e in state.pending),
                       "failed": {e.grpc_address: m for e, m in state.failed.items()},
                       "error": state.error}
                for name, state in self._slots.items()}

    def prometheus_targets(self) -> list[dict[str, object]]:
        """File-based service discovery for Prometheus: every admitted server's metrics
        port, labelled with its slot (the label the gates' queries select on)."""
        return [{"targets": [e.metrics_target for e in state.slot.endpoints],
                 "labels": {"slot": name}}
                for name, state in self._slots.items() if state.slot.endpoints]
