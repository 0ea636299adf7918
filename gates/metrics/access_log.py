"""Envoy's gRPC access-log service (``envoy.access_loggers.http_grpc``) as a metrics feed:
every request's slot, outcome and duration go into :class:`SlotWindows`, about 100 ms
after it ends (Envoy's buffer flush interval).

A request belongs to the slot whose split cluster it was routed to (``slot_<name>``,
``slot_<name>_http`` or their ``_ha`` aggregates); preview (pinned) requests and anything
else are ignored. It failed when Envoy answered 5xx or nothing, or gRPC said other than OK
(``grpc-status`` in the trailers, or in the headers of a trailers-only answer).
"""

from __future__ import annotations

import logging
import re

import grpc
import numpy as np
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from gates.metrics.windows import SlotWindows

SPLIT_CLUSTER = re.compile(r"^slot_(blue|green)(?:_http)?(?:_ha)?$")
log = logging.getLogger("turnout.gates.access_log")


def outcome(entry: accesslog_pb2.HTTPAccessLogEntry) -> tuple[str, float, float, bool] | None:
    """(slot, completed at, latency ms, failed) of one logged request, or None."""
    common = entry.common_properties
    match = SPLIT_CLUSTER.match(common.upstream_cluster)
    if match is None:
        return None
    duration = common.duration if common.HasField("duration") \
        else common.time_to_last_downstream_tx_byte
    latency_ms = duration.seconds * 1e3 + duration.nanos / 1e6
    started = common.start_time.seconds + common.start_time.nanos / 1e9
    response = entry.response
    code = response.response_code.value if response.HasField("response_code") else 0
    grpc_status = response.response_trailers.get("grpc-status") \
        or response.response_headers.get("grpc-status")
    failed = code == 0 or code >= 500 or (grpc_status is not None and grpc_status != "0")
    return match.group(1), started + latency_ms / 1e3, latency_ms, failed


class AccessLogReceiver:
    """Serves ``StreamAccessLogs`` on a ``grpc.aio`` server; records into ``windows``."""

    def __init__(self, windows: SlotWindows) -> None:
        self.windows = windows
        self.received = 0

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_unary_rpc_method_handler(
            self._stream,
            request_deserializer=als_pb2.StreamAccessLogsMessage.FromString,
            response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "envoy.service.accesslog.v3.AccessLogService", {"StreamAccessLogs": method})

    def record(self, message: als_pb2.StreamAccessLogsMessage) -> int:
        """Record one batch (per slot at once); returns how many requests counted."""
        batches: dict[str, list[tuple[float, float, bool]]] = {}
        for entry in message.http_logs.log_entry:
            seen = outcome(entry)
            if seen is not None:
                slot, at, latency_ms, failed = seen
                batches.setdefault(slot, []).append((at, latency_ms, failed))
        counted = 0
        for slot, rows in batches.items():
            table = np.array(rows, dtype=float)  # columns: completed at, latency ms, failed
            self.windows.record_many(slot, at=table[:, 0], latency_ms=table[:, 1],
                                     error=table[:, 2] > 0)
            counted += len(rows)
        self.received += counted
        return counted

    async def _stream(self, requests, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        async for message in requests:
            if message.HasField("identifier"):  # the first message names the Envoy
                log.info("access-log stream from %s", message.identifier.node.id)
            self.record(message)
        return als_pb2.StreamAccessLogsResponse()
