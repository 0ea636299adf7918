"""One recorded exchange of a shadowed request, decoded from Envoy's tap trace: which side
(the live answer or the candidate's copy), the request id pairing the two, the model, a
digest of the request body (two sides of a pair must carry the same request), the outputs
as arrays, or the error the server answered, and the time to the response headers. KServe
v2 over gRPC (``ModelInfer``; ``ModelStreamInfer``, whose answer is every response of the
stream joined per output) and HTTP (``infer``; ``generate``; ``generate_stream``'s events
joined per output)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import InferResult, service_pb2

from triton_slots.routing import SHADOW_HEADER
from triton_slots.samples import kserve_tensor


@dataclass
class Exchange:
    side: str  # mirror.LIVE or mirror.COPY
    request_id: str
    model: str = ""
    request_digest: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None  # the server's refusal (gRPC status or HTTP status + body)
    truncated: bool = False  # a body over the tap's buffer: not comparable
    latency_s: float | None = None
    undecodable: str | None = None  # why the body could not be read as KServe v2


def _headers(part: dict[str, Any]) -> dict[str, str]:
    return {h["key"].lower(): h.get("value", "") for h in part.get("headers", [])}


def _body(part: dict[str, Any]) -> tuple[bytes, bool]:
    body = part.get("body") or {}
    return base64.b64decode(body.get("as_bytes", "")), bool(body.get("truncated"))


def _time(part: dict[str, Any]) -> float | None:
    stamp = part.get("headers_received_time")
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _grpc_messages(body: bytes) -> list[bytes]:
    """The length-prefixed gRPC messages of a body, in order."""
    messages, at = [], 0
    while at < len(body):
        if len(body) - at < 5:
            raise ValueError("short gRPC message")
        compressed, length = struct.unpack(">BI", body[at:at + 5])
        if compressed:
            raise ValueError("compressed gRPC message")
        if len(body) - at - 5 < length:
            raise ValueError("short gRPC message")
        messages.append(body[at + 5:at + 5 + length])
        at += 5 + length
    return messages


def _grpc_message(body: bytes) -> bytes:
    """The one message of a unary call's body."""
    messages = _grpc_messages(body)
    if not messages:
        raise ValueError("no gRPC message")
    return messages[0]


def _joined(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """A stream's responses joined per output along one axis: two streams agree exactly
    when their joined outputs do (another token, count or order of responses differs)."""
    return {name: np.concatenate([p.reshape(-1) for p in arrays])
            for name, arrays in parts.items()}


def decode(trace: dict[str, Any]) -> Exchange | None:
    """The exchange a trace records; None for a trace that is not a shadowed request."""
    recorded = trace.get("http_buffered_trace") or {}
    request, response = recorded.get("request") or {}, recorded.get("response") or {}
    request_headers, response_headers = _headers(request), _headers(response)
    side = response_headers.get(SHADOW_HEADER)
    request_id = request_headers.get("x-request-id")
    if side is None or not request_id:
        return None
    request_body, request_cut = _body(request)
    response_body, response_cut = _body(response)
    started, answered = _time(request), _time(response)
    exchange = Exchange(
        side=side, request_id=request_id,
        request_digest=hashlib.sha256(request_body).hexdigest()[:16],
        truncated=request_cut or response_cut,
        latency_s=None if started is None or answered is None else answered - started)
    if exchange.truncated:
        return exchange
    try:
        trailers = _headers({"headers": response.get("trailers", [])})
        if request_headers.get(":path", "").endswith("/ModelStreamInfer"):
            _decode_grpc_stream(exchange, request_body, response_body, response_headers,
                                trailers)
        elif request_headers.get("content-type", "").startswith("application/grpc"):
            _decode_grpc(exchange, request_body, response_body, response_headers, trailers)
        else:
            _decode_http(exchange, request_headers.get(":path", ""), response_body,
                         response_headers)
    except (ValueError, KeyError, TypeError, IndexError, DecodeError) as exc:
        exchange.undecodable = str(exc)[:200] or type(exc).__name__
    return exchange


def _decode_grpc(exchange: Exchange, request_body: bytes, response_body: bytes,
                 headers: dict[str, str], trailers: dict[str, str]) -> None:
    request = service_pb2.ModelInferRequest.FromString(_grpc_message(request_body))
    exchange.model = request.model_name
    exchange.error = _grpc_error(headers, trailers)
    if exchange.error is None:
        exchange.outputs = _outputs(service_pb2.ModelInferResponse.FromString(
            _grpc_message(response_body)))


def _grpc_error(headers: dict[str, str], trailers: dict[str, str]) -> str | None:
    """The call's non-OK status (in the trailers, or the headers of a trailers-only
    answer), None when it succeeded."""
    status = trailers.get("grpc-status", headers.get("grpc-status", "0"))
    if status == "0":
        return None
    message = trailers.get("grpc-message", headers.get("grpc-message", ""))
    return f"gRPC status {status}: {message}"[:300]


def _outputs(response: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    result = InferResult(response)
    return {output.name: array for output in response.outputs
            if (array := result.as_numpy(output.name)) is not None}


def _decode_grpc_stream(exchange: Exchange, request_body: bytes, response_body: bytes,
                        headers: dict[str, str], trailers: dict[str, str]) -> None:
    """A ``ModelStreamInfer`` stream: its answer is every response, joined per output; an
    error message on the stream (Triton's refusal) or a non-OK status is its error."""
    requests = [service_pb2.ModelInferRequest.FromString(m)
                for m in _grpc_messages(request_body)]
    exchange.model = requests[0].model_name if requests else ""
    exchange.error = _grpc_error(headers, trailers)
    if exchange.error is not None:
        return
    parts: dict[str, list[np.ndarray]] = {}
    for message in _grpc_messages(response_body):
        response = service_pb2.ModelStreamInferResponse.FromString(message)
        if response.error_message:
            exchange.error = f"stream error: {response.error_message}"[:300]
            return
        for name, array in _outputs(response.infer_response).items():
            parts.setdefault(name, []).append(array)
    exchange.outputs = _joined(parts)


_GENERATE_FIELDS = ("model_name", "model_version", "id", "parameters")


def _decode_generate(exchange: Exchange, body: bytes, *, events: bool) -> None:
    """KServe v2 ``generate`` (one JSON object) or ``generate_stream`` (server-sent events,
    one JSON object each): outputs are the objects' other keys, joined per output."""
    texts = [line[len(b"data:"):].strip() for line in body.splitlines()
             if line.startswith(b"data:")] if events else [body]
    parts: dict[str, list[np.ndarray]] = {}
    for text in texts:
        document = json.loads(text)
        if "error" in document:
            exchange.error = f"stream error: {document['error']}"[:300]
            return
        for name, value in document.items():
            if name in _GENERATE_FIELDS:
                continue
            values = value if isinstance(value, list) else [value]
            parts.setdefault(name, []).append(np.array(
                [v.encode() if isinstance(v, str) else v for v in values],
                dtype=np.object_ if any(isinstance(v, str) for v in values) else None))
    exchange.outputs = _joined(parts)


def _decode_http(exchange: Exchange, path: str, body: bytes, headers: dict[str, str]) -> None:
    parts = path.split("/")
    exchange.model = parts[3] if len(parts) > 3 else ""
    status = headers.get(":status", "200")
    if status != "200":
        exchange.error = f"HTTP {status}: {body[:200].decode(errors='replace')}"
        return
    if path.endswith(("/generate", "/generate_stream")):
        _decode_generate(exchange, body, events=path.endswith("_stream"))
        return
    if "inference-header-content-length" in headers:  # binary tensor extension
        exchange.outputs["<binary>"] = np.frombuffer(body, dtype=np.uint8)
        return
    for item in json.loads(body)["outputs"]:
        name, _, array = kserve_tensor(item, "answer")
        exchange.outputs[name] = array
