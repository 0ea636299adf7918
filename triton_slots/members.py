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
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from triton_slots.discovery import DiscoveryError, Resolver, ServerSource, choose
from triton_slots.slot import Endpoint, Slot

log = logging.getLogger("turnout.members")
#: A server that failed its bring-up is tried again after this long (or the source's
#: interval, if longer): a dead server listed for good costs a line every few seconds.
RETRY_S = 5.0
#: Servers an operator may list in one slot.
MAX_SERVERS = 256
#: Bring-ups at once (each may wait on an unreachable server): their own threads, so
#: they never starve the control plane's other work.
BRING_UP_THREADS = 4

#: bring_up(slot, endpoint) -> the refs it now serves; raises with the reason.
BringUp = Callable[[str, Endpoint], list[str]]
#: what the slot's set is now (to notice a deploy that changed it during a bring-up).
SetOf = Callable[[str], list[str]]
#: the server list an operator set for a slot (None: never edited); see discovery.static.
Stored = Callable[[str], tuple[Endpoint, ...] | None]


class MembershipError(ValueError):
    """An edit of a slot's server list refused; the message names the server and why."""


class UnknownServer(MembershipError):
    """The server to remove is not in the slot's list."""


@dataclass
class _Slot:
    slot: Slot
    source: ServerSource
    next_at: float = 0.0
    error: str | None = None
    found: tuple[Endpoint, ...] = ()  # what the source answered last
    pending: set[Endpoint] = field(default_factory=set)
    failed: dict[Endpoint, str] = field(default_factory=dict)
    retry_at: dict[Endpoint, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Members:
    def __init__(self, slots: dict[str, Slot], *, bring_up: BringUp, set_of: SetOf,
                 on_change: Callable[[], None], resolve: Resolver | None = None,
                 stored: Stored | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = {name: _Slot(slot, choose(
            slot, resolve=resolve,
            stored=functools.partial(stored, name) if stored is not None else None),
            found=slot.endpoints) for name, slot in slots.items()}
        self._bring_up = bring_up
        self._set_of = set_of
        self._on_change = on_change
        self._clock = clock
        self._tasks: set[asyncio.Task] = set()
        self._threads = ThreadPoolExecutor(BRING_UP_THREADS, thread_name_prefix="bring-up")

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

    def edited(self, name: str, *, add: Endpoint | None = None, remove: str | None = None
               ) -> tuple[Endpoint, ...]:
        """Slot ``name``'s list with ``add`` added or the server at ``remove`` (its gRPC
        address) taken out; :class:`MembershipError` says why not. Blocking (it reads the
        list as stored now): call off the event loop. Changes nothing by itself."""
        state = self._slots[name]
        if not state.source.editable:
            raise MembershipError(f"slot {name}'s servers come from {state.source.describe()}"
                                  ": change what that source answers, not a list")
        listed = state.source.servers()
        if remove is not None:
            kept = tuple(e for e in listed if e.grpc_address != remove)
            if len(kept) == len(listed):
                raise UnknownServer(f"{remove} is not a server of slot {name} (its servers: "
                                    f"{', '.join(e.grpc_address for e in listed) or 'none'})")
            return kept
        assert add is not None, "edited() needs add or remove"
        if len(listed) >= MAX_SERVERS:
            raise MembershipError(f"slot {name} lists {len(listed)} servers, the most it may")
        if any(e.grpc_address == add.grpc_address for e in listed):
            raise MembershipError(f"{add.grpc_address} is already a server of slot {name}")
        for other, theirs in self._slots.items():
            known = {*theirs.slot.endpoints, *theirs.pending, *theirs.failed}
            if theirs.source.editable:
                known.update(theirs.source.servers())
            if other != name and add.grpc_address in {e.grpc_address for e in known}:
                raise MembershipError(f"{add.grpc_address} is a server of slot {other}: a "
                                      "server serves one slot")
        return (*listed, add)

    def listed(self, name: str, servers: tuple[Endpoint, ...]) -> None:
        """Slot ``name``'s list was just edited to ``servers`` (and stored): follow it now,
        on the event loop, rather than at the next look."""
        self._follow(name, tuple(servers), self._clock())

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
            self._follow(name, tuple(found), now)

    def _follow(self, name: str, found: tuple[Endpoint, ...], now: float) -> None:
        """Make slot ``name`` follow what its source lists: servers no longer listed leave
        at once; new ones (and failed ones whose back-off is over) are brought up."""
        state = self._slots[name]
        state.found = found
        for endpoint in [e for e in state.failed if e not in found]:
            del state.failed[endpoint]  # no longer listed: nothing to retry
            state.retry_at.pop(endpoint, None)
        admitted = state.slot.endpoints
        gone = [e for e in admitted if e not in found]
        if gone:
            log.warning("slot %s: server(s) gone, out of EDS now: %s", name,
                        ", ".join(e.grpc_address for e in gone))
            self._set(name, tuple(e for e in admitted if e in found))
            self._on_change()
        for endpoint in found:
            if endpoint in state.failed and now < state.retry_at.get(endpoint, 0.0):
                continue
            if endpoint not in admitted and endpoint not in state.pending:
                state.pending.add(endpoint)
                task = asyncio.create_task(self._admit(name, endpoint))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _admit(self, name: str, endpoint: Endpoint) -> None:
        state = self._slots[name]
        started = time.monotonic()
        try:
            refs = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._locked_bring_up, name, endpoint)
        except Exception as exc:
            state.failed[endpoint] = str(exc)
            wait = max(RETRY_S, state.source.interval_s)
            state.retry_at[endpoint] = self._clock() + wait
            log.error("slot %s: %s not admitted (retried in %.0fs): %s", name,
                      endpoint.grpc_address, wait, exc)
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
        self._threads.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, dict[str, object]]:
        return {name: {"source": state.source.describe(),
                       "servers": [e.grpc_address for e in state.slot.endpoints],
                       "pending": sorted(e.grpc_address for e in state.pending),
                       "failed": {e.grpc_address: m for e, m in state.failed.items()},
                       "error": state.error}
                for name, state in self._slots.items()}

    def servers(self, name: str) -> list[tuple[Endpoint, str, str]]:
        """Slot ``name``'s servers as its source last listed them, then any still admitted:
        (server, ``admitted`` | ``bringing up`` | ``failed`` | ``waiting``, the reason)."""
        state = self._slots[name]
        rows = []
        for endpoint in dict.fromkeys((*state.found, *state.slot.endpoints)):
            if endpoint in state.slot.endpoints:
                rows.append((endpoint, "admitted", ""))
            elif endpoint in state.pending:
                rows.append((endpoint, "bringing up", ""))
            elif endpoint in state.failed:
                rows.append((endpoint, "failed", state.failed[endpoint]))
            else:
                rows.append((endpoint, "waiting", "not looked at yet"))
        return rows

    def editable(self, name: str) -> bool:
        return self._slots[name].source.editable

    def prometheus_targets(self) -> list[dict[str, object]]:
        """File-based service discovery for Prometheus: every admitted server's metrics
        port, labelled with its slot (the label the gates' queries select on)."""
        return [{"targets": [e.metrics_target for e in state.slot.endpoints],
                 "labels": {"slot": name}}
                for name, state in self._slots.items() if state.slot.endpoints]
