"""The snapshot cache: current snapshot per node group, watches, and ACK tracking.

The cache never imports the server. Streams report to it through a :class:`StreamHandle`
(opened, ACKed, NACKed, closed). The control plane publishes with :meth:`SnapshotCache.publish`
and waits with :meth:`SnapshotCache.wait` (its lock covers only the publishing); its
snapshots keep one set of clusters, so they never need the make-before-break bridge that
:meth:`SnapshotCache.publish_and_wait` adds for a snapshot that drops clusters.
Everything here runs on one asyncio event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from xds_server import type_urls
from xds_server.snapshot import Snapshot
from xds_server.text import printable

Outcome = Literal["acked", "nacked", "timeout", "disconnected"]


@dataclass(frozen=True)
class Nack:
    """A rejected push: which node, which type and version, and Envoy's message."""

    node_id: str
    type_url: str
    version: str
    message: str
    at: float  # wall clock, seconds since the epoch

    def as_dict(self) -> dict[str, object]:
        return {
            "node": self.node_id,
            "type": type_urls.SHORT_NAMES.get(self.type_url, self.type_url),
            "version": self.version,
            "message": self.message,
            "at": self.at,
        }


@dataclass
class StreamHandle:
    """The cache's view of one ADS stream. Owned by the cache; the server reports into it."""

    stream_id: int
    node_id: str
    group: str
    connected_at: float
    subscribed: set[str] = field(default_factory=set)
    acked: dict[str, str] = field(default_factory=dict)
    nacked: dict[str, Nack] = field(default_factory=dict)
    claimed_group: str = ""  # node.cluster as the proxy sent it (may differ from group)
    awaited: bool = True  # whether pushes wait for its answer (see SnapshotCache.expects)

    def resolved(self, snapshot: Snapshot) -> Outcome | None:
        """``acked`` or ``nacked`` once the stream subscribes to every type the snapshot
        carries and has answered each type's version."""
        if not snapshot.types_present <= self.subscribed:
            return None
        outcome: Outcome = "acked"
        for type_url in self.subscribed:
            version = snapshot.version(type_url)
            if self.acked.get(type_url) == version:
                continue
            nack = self.nacked.get(type_url)
            if nack is not None and nack.version == version:
                outcome = "nacked"
                continue
            return None
        return outcome


@dataclass(frozen=True)
class NodeOutcome:
    node_id: str
    stream_id: int
    outcome: Outcome
    seconds: float | None  # time from publication to this node's answer
    detail: str = ""


@dataclass(frozen=True)
class Convergence:
    """What one publication did: per-type versions, time to the last answer, per node."""

    group: str
    versions: dict[str, str]
    seconds: float
    outcomes: tuple[NodeOutcome, ...]
    quorum: float = 1.0

    @property
    def acked(self) -> int:
        return sum(1 for o in self.outcomes if o.outcome == "acked")

    @property
    def converged(self) -> bool:
        """True when the quorum of the nodes connected at publication ACKed: all of them
        by default (none NACKed or timed out); with a quorum below 1, ``floor(quorum x
        nodes)`` (at least one), the others being stragglers."""
        if self.quorum >= 1.0 or not self.outcomes:
            return all(o.outcome == "acked" for o in self.outcomes)
        return self.acked >= quorum_count(self.quorum, len(self.outcomes))

    @property
    def answered_ok(self) -> bool:
        """At least one proxy ACKed and none rejected: the others only stayed silent or
        left (what a rollback needs: it is never held by a straggler)."""
        return self.acked > 0 and not any(o.outcome == "nacked" for o in self.outcomes)

    @property
    def stragglers(self) -> list[NodeOutcome]:
        return [o for o in self.outcomes if o.outcome != "acked"]

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "versions": self.versions,
            "seconds": self.seconds,
            "converged": self.converged,
            "quorum": self.quorum,
            "acked": self.acked,
            "stragglers": [o.node_id for o in self.stragglers],
            "nodes": [o.__dict__ for o in self.outcomes],
        }


def shortfall(min_proxies: int, answered: int) -> list[NodeOutcome]:
    """A timed-out outcome for each proxy missing to reach ``min_proxies`` answers: an empty
    fleet is not a converged one."""
    return [NodeOutcome("(none)", 0, "timeout", None,
                        f"fewer than {min_proxies} proxies connected")
            for _ in range(max(0, min_proxies - answered))]


def quorum_count(quorum: float, proxies: int) -> int:
    """How many of ``proxies`` must ACK: ``floor(quorum * proxies)``, at least one."""
    return max(1, math.floor(quorum * proxies + 1e-9)) if proxies else 0


@dataclass
class Publication:
    """One snapshot being answered by the streams connected when it was published."""

    snapshot: Snapshot
    started: float
    pending: dict[int, StreamHandle]
    min_proxies: int = 0
    outcomes: list[NodeOutcome] = field(default_factory=list)
    answered: int = 0  # outcomes that are acked or nacked (kept, not recounted: O(1))
    acked: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    quorum: float = 1.0
    early: bool = False
    group: str = ""

    def settle(self, handle: StreamHandle, outcome: Outcome, detail: str = "") -> None:
        if self.pending.pop(handle.stream_id, None) is None:
            return
        elapsed = None if outcome == "timeout" else time.monotonic() - self.started
        self.outcomes.append(
            NodeOutcome(handle.node_id, handle.stream_id, outcome, elapsed, detail)
        )
        if outcome in ("acked", "nacked"):
            self.answered += 1
        if outcome == "acked":
            self.acked += 1
        self.check()

    def check(self) -> None:
        everyone = not self.pending and self.answered >= self.min_proxies
        enough = self.early and self.acked >= max(
            self.min_proxies, quorum_count(self.quorum, len(self.outcomes) + len(self.pending)))
        if everyone or enough:
            self.done.set()


@dataclass
class _Group:
    snapshot: Snapshot | None = None
    watchers: dict[int, Callable[[], None]] = field(default_factory=dict)
    streams: dict[int, StreamHandle] = field(default_factory=dict)
    publications: list[Publication] = field(default_factory=list)
    last_nack: Nack | None = None


class SnapshotCache:
    """Snapshots keyed by node group (Envoy's ``node.cluster``), with fleet ACK tracking."""

    def __init__(
        self, *, logger: logging.Logger | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._groups: dict[str, _Group] = {}
        self.nacks: dict[str, int] = {}  # NACKs received since start, per type URL
        self._next_stream = 0
        self._nodes: Counter[str] = Counter()  # open streams per node id
        self._log = logger or logging.getLogger("turnout.xds.cache")
        self._clock = clock
        #: Called (cheap, non-blocking) when a stream opens or closes.
        self.on_streams_changed: Callable[[], None] | None = None
        #: Which node ids pushes wait for (None: every connected one). A stream of another
        #: node is served all the same, but cannot hold a push up by never answering.
        self.expects: Callable[[str], bool] | None = None

    def _group(self, name: str) -> _Group:
        return self._groups.setdefault(name, _Group())

    # ---- publisher side -------------------------------------------------------------
    def snapshot(self, group: str) -> Snapshot | None:
        state = self._groups.get(group)
        return state.snapshot if state is not None else None

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def set_snapshot(self, group: str, snapshot: Snapshot, *, verify: bool = True) -> None:
        """Make ``snapshot`` current for ``group`` and wake its streams. Checks consistency
        first unless ``verify`` is False (tests use that to make Envoy NACK)."""
        if verify:
            snapshot.consistent()
        state = self._group(group)
        # Publications still waiting follow the newest snapshot: every publisher builds
        # from the same desired state, so a proxy that answered the newest has answered
        # what they published (a health push during a weight push does not void it).
        for publication in state.publications:
            publication.snapshot = snapshot
        state.snapshot = snapshot
        for notify in list(state.watchers.values()):
            notify()

    async def publish_and_wait(
        self, group: str, snapshot: Snapshot, *, timeout: float = 10.0, verify: bool = True,
        min_proxies: int = 0, quorum: float = 1.0, early: bool = False,
    ) -> Convergence:
        """Publish ``snapshot`` and wait until every stream of ``group`` connected now has
        ACKed or NACKed it, or ``timeout`` seconds pass (see :meth:`publish` and
        :meth:`wait`).

        Make before break: when the new snapshot drops clusters, an intermediate snapshot
        (new routes, old and new clusters) is published and awaited first."""
        previous = self.snapshot(group)
        if verify:
            snapshot.consistent()
        if previous is not None:
            dropped = previous.names(type_urls.CLUSTER) - snapshot.names(type_urls.CLUSTER)
            if dropped:
                bridge = _bridge(previous, snapshot)
                first = await self.publish_and_wait(group, bridge, timeout=timeout,
                                                    verify=verify, min_proxies=min_proxies)
                if not first.converged:
                    return first
        publication = self.publish(group, snapshot, verify=False, min_proxies=min_proxies,
                                   quorum=quorum, early=early)
        return await self.wait(publication, timeout)

    def publish(self, group: str, snapshot: Snapshot, *, verify: bool = True,
                min_proxies: int = 0, quorum: float = 1.0, early: bool = False
                ) -> Publication:
        """Make ``snapshot`` current and start tracking which streams answer it. Returns at
        once (no lock needs to be held while proxies answer); :meth:`wait` for the result.

        ``min_proxies``: an empty fleet is not a converged one (streams that connect
        meanwhile count). ``quorum``: the fraction of connected proxies that must ACK
        (``floor(quorum * proxies)``, at least one) for :attr:`Convergence.converged`;
        with ``early`` the wait ends as soon as that many ACKed (stragglers are named)."""
        self.set_snapshot(group, snapshot, verify=verify)
        state = self._group(group)
        awaited = {i: h for i, h in state.streams.items() if h.awaited}
        publication = Publication(snapshot, time.monotonic(), awaited, min_proxies,
                                  quorum=quorum, early=early, group=group)
        state.publications.append(publication)
        for handle in list(publication.pending.values()):
            self._progress(state, handle)
        publication.check()
        return publication

    async def wait(self, publication: Publication, timeout: float = 10.0) -> Convergence:
        """Wait for ``publication`` to settle, at most ``timeout`` seconds."""
        state = self._group(publication.group)
        try:
            await asyncio.wait_for(publication.done.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            if publication in state.publications:
                state.publications.remove(publication)
        for handle in list(publication.pending.values()):
            publication.settle(handle, "timeout", _waiting_for(handle, publication.snapshot))
        answered = [o.seconds for o in publication.outcomes if o.seconds is not None]
        publication.outcomes += shortfall(publication.min_proxies, publication.answered)
        return Convergence(
            group=publication.group,
            versions=publication.snapshot.versions,
            seconds=max(answered, default=time.monotonic() - publication.started),
            outcomes=tuple(sorted(publication.outcomes, key=lambda o: o.stream_id)),
            quorum=publication.quorum,
        )

    # ---- stream side ----------------------------------------------------------------
    def open_stream(self, node_id: str, group: str, *, claimed: str = "") -> StreamHandle:
        self._next_stream += 1
        handle = StreamHandle(self._next_stream, node_id, group, self._clock(),
                              claimed_group=claimed or group,
                              awaited=self.expects is None or self.expects(node_id))
        state = self._group(group)
        state.streams[handle.stream_id] = handle
        self._nodes[node_id] += 1
        for publication in state.publications:
            # Waiting for the fleet to show up: count this one, if it is one awaited.
            if publication.min_proxies and handle.awaited:
                publication.pending[handle.stream_id] = handle
        if self.on_streams_changed is not None:
            self.on_streams_changed()
        return handle

    def close_stream(self, handle: StreamHandle) -> None:
        state = self._groups.get(handle.group)
        if state is None:
            return
        if state.streams.pop(handle.stream_id, None) is not None:
            self._nodes[handle.node_id] -= 1
            if self._nodes[handle.node_id] <= 0:
                del self._nodes[handle.node_id]
        state.watchers.pop(handle.stream_id, None)
        for publication in state.publications:
            publication.settle(handle, "disconnected")
        if self.on_streams_changed is not None:
            self.on_streams_changed()
        if not state.streams and state.snapshot is None and not state.publications:
            del self._groups[handle.group]  # nothing published for it: free it

    def holds(self, node_id: str) -> bool:
        """Whether a proxy with this node id has an ADS stream open now."""
        return node_id in self._nodes

    def watch(self, handle: StreamHandle, notify: Callable[[], None]) -> None:
        """Call ``notify`` (cheap, non-blocking) whenever the stream's group gets a new
        snapshot, until the stream is closed."""
        self._group(handle.group).watchers[handle.stream_id] = notify

    def subscribed(self, handle: StreamHandle, type_url: str) -> None:
        handle.subscribed.add(type_url)

    def acked(self, handle: StreamHandle, type_url: str, version: str) -> None:
        handle.acked[type_url] = version
        self._progress(self._group(handle.group), handle)

    def nacked(self, handle: StreamHandle, type_url: str, version: str, message: str) -> None:
        nack = Nack(handle.node_id, type_url, version, message, self._clock())
        handle.nacked[type_url] = nack
        state = self._group(handle.group)
        state.last_nack = nack
        self.nacks[type_url] = self.nacks.get(type_url, 0) + 1
        self._log.warning(
            "NACK from node %s (group %s) for %s version %s: %s",
            printable(handle.node_id), printable(handle.group),
            type_urls.SHORT_NAMES.get(type_url, type_url), printable(version),
            printable(message, 500),
        )
        self._progress(state, handle)

    def _progress(self, state: _Group, handle: StreamHandle) -> None:
        for publication in state.publications:
            if handle.stream_id in publication.pending:
                outcome = handle.resolved(publication.snapshot)
                if outcome is not None:
                    detail = "; ".join(n.message for n in handle.nacked.values()
                                       if n.version == publication.snapshot.version(n.type_url))
                    publication.settle(handle, outcome, detail)

    # ---- status ---------------------------------------------------------------------
    def sync_counts(self, group: str, type_url: str) -> tuple[str, int, int]:
        """``type_url``'s current version in ``group``, the streams connected, and how
        many of them hold the whole current snapshot."""
        state = self._groups.get(group)
        if state is None or state.snapshot is None:
            return "", len(state.streams) if state else 0, 0
        snapshot = state.snapshot
        return (snapshot.version(type_url), len(state.streams),
                sum(1 for h in state.streams.values() if h.resolved(snapshot) == "acked"))

    def status(self, group: str) -> dict[str, object]:
        """A JSON-ready view of the group: versions, connected proxies, last NACK."""
        state = self._group(group)
        snapshot = state.snapshot
        return {
            "group": group,
            "versions": snapshot.versions if snapshot else {},
            "proxies": [
                {
                    "node": h.node_id,
                    "stream": h.stream_id,
                    "claimed_group": h.claimed_group,
                    "connected_at": h.connected_at,
                    "acked": {type_urls.SHORT_NAMES[t]: v for t, v in sorted(h.acked.items())},
                    "in_sync": bool(snapshot) and h.resolved(snapshot) == "acked",
                    "awaited": h.awaited,
                }
                for h in state.streams.values()
            ],
            "last_nack": state.last_nack.as_dict() if state.last_nack else None,
        }


def _bridge(old: Snapshot, new: Snapshot) -> Snapshot:
    """New listeners and routes over the union of old and new clusters and endpoints."""
    def union(type_url: str) -> list:
        merged = dict(old.resources(type_url))
        merged.update(new.resources(type_url))
        return list(merged.values())

    return Snapshot.build(
        listeners=new.resources(type_urls.LISTENER).values(),
        routes=new.resources(type_urls.ROUTE).values(),
        clusters=union(type_urls.CLUSTER),
        endpoints=union(type_urls.ENDPOINT),
    )


def _waiting_for(handle: StreamHandle, snapshot: Snapshot) -> str:
    missing = [
        type_urls.SHORT_NAMES[t] for t in sorted(handle.subscribed)
        if handle.acked.get(t) != snapshot.version(t)
    ]
    return "no answer for " + ", ".join(missing)
