"""Envoy's gRPC access-log service (``envoy.access_loggers.http_grpc``) as a metrics feed:
every inference request's slot, outcome and duration go into :class:`SlotWindows`, about
100 ms after it ends (Envoy's buffer flush interval).

What counts (docs/policy.md, "What the envoy source counts"):
- A request belongs to the slot whose split cluster it was routed to (``slot_<name>``,
  ``slot_<name>_http`` or their ``_ha`` aggregates); preview (pinned) requests and anything
  else are ignored.
- Only inference: KServe v2 ``ModelInfer`` and ``ModelStreamInfer`` over gRPC, ``infer``,
  ``generate`` and ``generate_stream`` over HTTP. Metadata, health and repository calls are
  ignored: they are cheap, anyone may send them, and they would dilute the slot's figures.
- It failed when Envoy answered 5xx, 429 or nothing, or gRPC said other than OK; except the
  statuses a client causes (gRPC CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED; HTTP 4xx but 429),
  which are counted apart as client errors, in neither the error rate nor the latency.
- A stream (gRPC ``ModelStreamInfer``, HTTP ``generate_stream``) also gives its time to
  first response byte (TTFT), and for gRPC its count of response messages (Envoy's gRPC
  statistics filter, logged as filter state): the token-level gates' figures.

Who may send: the receiver asks ``admit`` (the control plane's identity rule) about the
node a stream names, takes entries completed in ``[now - max_age_s, now + max_skew_s]``
only, and holds each node to a rate budget; everything refused is counted by reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import grpc
import numpy as np
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError

from gates.metrics.windows import SlotWindows
from triton_slots.routing import split_slot

INFERENCE_GRPC = frozenset({"/inference.GRPCInferenceService/ModelInfer",
                            "/inference.GRPCInferenceService/ModelStreamInfer"})
INFERENCE_HTTP = re.compile(
    r"^/v2/models/[^/?]+(?:/versions/[^/?]+)?/(?:infer|generate|generate_stream)(?:\?.*)?$")
#: gRPC statuses a client causes (by name: CANCELLED, INVALID_ARGUMENT, NOT_FOUND,
#: ALREADY_EXISTS, PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED).
CLIENT_GRPC = frozenset({"1", "3", "5", "6", "7", "9", "11", "16"})
log = logging.getLogger("turnout.gates.access_log")


class Verdict(StrEnum):
    OK = "ok"
    FAILED = "failed"
    CLIENT = "client_error"


STREAMING = frozenset({"/inference.GRPCInferenceService/ModelStreamInfer"})
STREAMING_HTTP = re.compile(r"^/v2/models/[^/?]+(?:/versions/[^/?]+)?/generate_stream(?:\?.*)?$")
#: The filter state Envoy's gRPC statistics filter leaves on each gRPC call (its message
#: counts); the access logger sends it along.
GRPC_STATS = "envoy.filters.http.grpc_stats"


@dataclass(frozen=True)
class Observed:
    """One logged inference request. A stream (gRPC ModelStreamInfer, HTTP
    generate_stream) also has its count of responses (at least 1; gRPC's as counted by
    Envoy, an SSE stream's unknown: 1) and its time to the first response byte."""

    slot: str
    at: float  # completed at (Unix seconds)
    latency_ms: float
    verdict: Verdict
    responses: int = 0  # 0: not a stream
    ttft_ms: float = math.nan


def _ms(duration: duration_pb2.Duration) -> float:
    return duration.seconds * 1e3 + duration.nanos / 1e6


def responses_of(entry: accesslog_pb2.HTTPAccessLogEntry) -> int:
    """A stream's response messages as Envoy's gRPC statistics filter counted them (at
    least 1: an unknown count is one response)."""
    state = entry.common_properties.filter_state_objects.get(GRPC_STATS)
    counts = grpc_stats_pb2.FilterObject()
    if state is not None and state.Unpack(counts):
        return max(1, counts.response_message_count)
    return 1


def is_inference(path: str) -> bool:
    return path in INFERENCE_GRPC or INFERENCE_HTTP.match(path) is not None


def verdict(code: int, grpc_status: str | None) -> Verdict:
    """How a request ended: HTTP ``code`` (0: no answer) and gRPC status if any."""
    if code == 0 or code >= 500:
        return Verdict.FAILED
    if grpc_status is not None and grpc_status != "0":
        return Verdict.CLIENT if grpc_status in CLIENT_GRPC else Verdict.FAILED
    if 400 <= code < 500:
        return Verdict.FAILED if code == 429 else Verdict.CLIENT
    return Verdict.OK


def classify(entry: accesslog_pb2.HTTPAccessLogEntry) -> Observed | str:
    """The slot, completion time, latency and verdict of one logged request; for a request
    that is not split inference traffic, why it is ignored."""
    common = entry.common_properties
    slot = split_slot(common.upstream_cluster)  # triton_slots.routing's names
    if slot is None:
        return "not split traffic"
    if not is_inference(entry.request.path):
        return "not inference"
    path = entry.request.path
    duration = common.duration if common.HasField("duration") \
        else common.time_to_last_downstream_tx_byte
    latency_ms = _ms(duration)
    started = common.start_time.seconds + common.start_time.nanos / 1e9
    response = entry.response
    code = response.response_code.value if response.HasField("response_code") else 0
    grpc_status = response.response_trailers.get("grpc-status") \
        or response.response_headers.get("grpc-status")
    stream = path in STREAMING or STREAMING_HTTP.match(path) is not None
    first = _ms(common.time_to_first_upstream_rx_byte) \
        if stream and common.HasField("time_to_first_upstream_rx_byte") else math.nan
    return Observed(slot, started + latency_ms / 1e3, latency_ms,
                    verdict(code, grpc_status), responses_of(entry) if stream else 0, first)


def outcome(entry: accesslog_pb2.HTTPAccessLogEntry) -> Observed | None:
    """:func:`classify`, with None for a request that is not counted."""
    seen = classify(entry)
    return None if isinstance(seen, str) else seen


def printable(text: str, limit: int = 80) -> str:
    """A sender-chosen string fit for one log line: escaped and truncated."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


class Budget:
    """Entries per second per node (a token bucket holding up to two seconds' worth)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self._clock = clock
        self._nodes: dict[str, tuple[float, float]] = {}

    def take(self, node: str, n: int) -> bool:
        now = self._clock()
        tokens, last = self._nodes.get(node, (2 * self.per_s, now))
        tokens = min(2 * self.per_s, tokens + (now - last) * self.per_s)
        ok = n <= tokens
        self._nodes[node] = (tokens - n if ok else tokens, now)
        return ok


Admit = Callable[[str, grpc.aio.ServicerContext], "str | None"]


class AccessLogReceiver:
    """Serves ``StreamAccessLogs`` on a ``grpc.aio`` server; records into ``windows``.

    ``admit(node, context)`` says why a stream may not report for ``node`` (None: it may);
    ``holds(node)`` whether the node still holds an ADS stream (asked at every message);
    ``on_refused(reason, entries)`` counts what was refused."""

    def __init__(self, windows: SlotWindows, *, admit: Admit | None = None,
                 holds: Callable[[str], bool] | None = None,
                 on_refused: Callable[[str, int], None] | None = None,
                 max_age_s: float = 10.0, max_skew_s: float = 2.0,
                 budget_per_s: float = 20_000.0, max_batch: int = 2_000,
                 bytes_per_s: float = 4_000_000.0) -> None:
        self.windows = windows
        self.received = 0
        self.refused: Counter[str] = Counter()
        #: entries that are not split inference traffic, by kind (preview or other
        #: clusters, non-inference paths): not refused, just not counted.
        self.ignored: Counter[str] = Counter()
        self._admit = admit
        self._holds = holds
        self._on_refused = on_refused
        self.max_age_s = max_age_s
        self.max_skew_s = max_skew_s
        self.max_batch = max_batch
        self.budget = Budget(budget_per_s)
        # Batches are parsed off the loop that serves xDS; a node sending more bytes a
        # second than this has its batches refused unread, and is read at that pace.
        self.byte_budget = Budget(bytes_per_s)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_unary_rpc_method_handler(
            self._stream,
            request_deserializer=None,  # bytes: parsed off the loop, within a byte budget
            response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "envoy.service.accesslog.v3.AccessLogService", {"StreamAccessLogs": method})

    def refuse(self, reason: str, entries: int) -> None:
        self.refused[reason] += entries
        if self._on_refused is not None:
            self._on_refused(reason, entries)

    def record(self, message: als_pb2.StreamAccessLogsMessage) -> int:
        """Record one batch (per slot at once); returns how many inference requests counted
        (client errors included). Entries completed too long ago or in the future are
        refused and counted."""
        now = self.windows.clock()
        oldest, newest = now - self.max_age_s, now + self.max_skew_s
        batches: dict[str, list[tuple[float, float, bool, bool, int, float]]] = {}
        stale = future = 0
        for entry in message.http_logs.log_entry:
            seen = classify(entry)
            if isinstance(seen, str):
                self.ignored[seen] += 1
            elif seen.at < oldest:
                stale += 1
            elif seen.at > newest:
                future += 1
            else:
                batches.setdefault(seen.slot, []).append(
                    (seen.at, seen.latency_ms, seen.verdict is Verdict.FAILED,
                     seen.verdict is Verdict.CLIENT, seen.responses, seen.ttft_ms))
        if stale:
            self.refuse("stale", stale)
        if future:
            self.refuse("future", future)
        counted = 0
        for slot, rows in batches.items():
            at, latency_ms, failed, client, responses, ttft_ms = map(
                np.array, zip(*rows, strict=True))
            dropped = self.windows.record_many(slot, at=at, latency_ms=latency_ms,
                                               error=failed, client=client,
                                               responses=responses, ttft_ms=ttft_ms)
            if dropped:
                self.refuse("stale", dropped)
            counted += len(rows) - dropped
        self.received += counted
        return counted

    async def _stream(self, requests, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        node = None
        async for raw in requests:
            if node is not None and not self.byte_budget.take(node, len(raw)):
                # Refused unread, and read no faster than the budget: HTTP/2 flow control
                # then slows the sender itself (a flood costs neither side CPU).
                self.refuse("bytes", 1)
                await asyncio.sleep(len(raw) / self.byte_budget.per_s)
                continue
            try:
                message = await asyncio.to_thread(als_pb2.StreamAccessLogsMessage.FromString,
                                                  raw)
            except DecodeError:
                self.refuse("identity" if node is None else "batch", 1)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "not a StreamAccessLogsMessage")
            entries = len(message.http_logs.log_entry)
            if node is None:
                node = message.identifier.node.id if message.HasField("identifier") else ""
                reason = "the first message must name the node (identifier.node.id)" \
                    if not node else (self._admit(node, context) if self._admit else None)
                if reason is not None:
                    self.refuse("identity", entries)
                    log.warning("refused access-log stream from %s claiming node %s: %s",
                                printable(context.peer()), printable(node), reason)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
                log.info("access-log stream from %s", printable(node))
            elif self._holds is not None and not self._holds(node):
                self.refuse("identity", entries)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"node {node} no longer holds an ADS stream")
            if entries > self.max_batch:
                self.refuse("batch", entries)
                continue
            if not self.budget.take(node, entries):
                self.refuse("rate", entries)
                continue
            await asyncio.to_thread(self.record, message)  # off the loop that serves xDS
        return als_pb2.StreamAccessLogsResponse()
