"""Adversarial inputs, generated from the model's signature: each must be refused with a
client error (or, for NaN/Inf, refused or answered), promptly, and the slot must still be
healthy and answer exactly as before afterwards.

Cases: wrong dtype, wrong shape, missing / unknown / extra input, NaN and Inf (when the
model has a float input), empty and oversized batch (when it batches), malformed BYTES
and non-UTF-8 BYTES (when it has a BYTES input), an oversized payload, and garbage bytes.

Accepted answers are INVALID_ARGUMENT (Triton's and the model's own refusals); NaN/Inf
and non-UTF-8 text may also succeed (Triton itself accepts them; refusing them is the
model's choice), and
the garbage case accepts gRPC's INTERNAL "Unable to parse request" (gRPC answers that
before Triton sees the message). A decoupled model gets each case on ModelStreamInfer:
an error message on the stream is its refusal, and a stream must end (final response or
error) within the timeout; for garbage bytes Triton closes the stream without a response,
which is accepted there. Any other status (UNAVAILABLE, UNKNOWN, INTERNAL,
DEADLINE_EXCEEDED, ...), an unexpected success, or a hang fails the case.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from gates.validation.report import CheckResult
from gates.validation.settings import AdversarialSettings
from gates.validation.target import SlotTarget
from triton_slots.signature import ModelSignature, TensorSpec, numpy_dtype
from triton_slots.tensors import Hints, random_inputs

_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
_REFUSED = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
_REFUSED_OR_OK = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK})
UNKNOWN_INPUT = "TURNOUT_NOT_AN_INPUT"
#: A stream closed cleanly before any response: Triton's answer to a message it cannot
#: parse on ModelStreamInfer (accepted for the garbage case only).
NO_RESPONSE = "the stream ended without any response"


@dataclass(frozen=True)
class Tensor:
    """One input as sent on the wire: the name, datatype and shape it claims, and raw
    bytes that need not match any of them."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes
    accepted: frozenset[grpc.StatusCode] = _REFUSED
    extra_ok: tuple[tuple[grpc.StatusCode, str], ...] = ()


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """The KServe v2 raw encoding: BYTES elements each as a 4-byte little-endian length
    and the bytes; other types as their packed little-endian values."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v
                        for v in (x if isinstance(x, bytes) else str(x).encode()
                                  for x in array.reshape(-1)))
    return np.ascontiguousarray(array).tobytes()


def encode(model: str, tensors: list[Tensor]) -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model)
    for t in tensors:
        item = request.inputs.add()
        item.name, item.datatype = t.name, t.datatype
        item.shape.extend(t.shape)
        request.raw_input_contents.append(t.raw)
    return request.SerializeToString()


def _valid(sig: ModelSignature, arrays: Mapping[str, np.ndarray]) -> list[Tensor]:
    return [Tensor(t.name, t.datatype, list(arrays[t.name].shape),
                   raw_bytes(arrays[t.name], t.datatype))
            for t in sig.inputs if t.name in arrays]


def _replace(tensors: list[Tensor], name: str, new: Tensor | None) -> list[Tensor]:
    out = [new if t.name == name else t for t in tensors]
    return [t for t in out if t is not None]


def _other_dtype(tensor: TensorSpec) -> str:
    return "FP64" if tensor.datatype != "FP64" else "FP32"


def generate_cases(sig: ModelSignature, hints: Hints | None,
                   s: AdversarialSettings) -> list[Case]:
    """The adversarial cases that apply to this signature."""
    arrays = random_inputs(sig, 1, seed=11, hints=hints)
    valid = _valid(sig, arrays)
    target = (sig.required_inputs or sig.inputs)[0]
    base = next(t for t in valid if t.name == target.name)
    data = arrays[target.name]
    cases: list[Case] = []

    def add(name: str, tensors: list[Tensor], **kw: object) -> None:
        cases.append(Case(name, encode(sig.name, tensors), **kw))  # type: ignore[arg-type]

    # Rank + 1: wrong for static and dynamic dimensions alike.
    wrong_shape = [*data.shape, 2]
    wrong = np.repeat(data[..., None], 2, axis=-1)
    add("wrong_shape", _replace(valid, target.name, Tensor(
        target.name, target.datatype, wrong_shape, raw_bytes(wrong, target.datatype))))
    other = _other_dtype(target)
    count = int(np.prod(data.shape))
    add("wrong_dtype", _replace(valid, target.name, Tensor(
        target.name, other, list(data.shape),
        np.zeros(count, numpy_dtype(other)).tobytes())))
    if sig.required_inputs:
        add("missing_input", _replace(valid, target.name, None))
    add("unknown_input_name", _replace(valid, target.name, Tensor(
        UNKNOWN_INPUT, base.datatype, base.shape, base.raw)))
    add("extra_input", [*valid, Tensor(UNKNOWN_INPUT, base.datatype, base.shape, base.raw)])
    floats = [t for t in sig.inputs if t.is_float and t.name in arrays]
    if floats:
        for label, value in (("nan_values", np.nan), ("inf_values", np.inf)):
            spoiled = arrays[floats[0].name].copy()
            spoiled.flat[0] = value
            add(label, _replace(valid, floats[0].name, Tensor(
                floats[0].name, floats[0].datatype, list(spoiled.shape),
                raw_bytes(spoiled, floats[0].datatype))), accepted=_REFUSED_OR_OK)
    if sig.batched:
        add("empty_batch", [Tensor(t.name, t.datatype, [0, *t.shape[1:]], b"") for t in valid])
        rows = sig.max_batch_size + 1
        big = random_inputs(sig, rows, seed=12, hints=hints)
        add("batch_above_max", _valid(sig, big))
    add("oversized_payload", _replace(valid, target.name, Tensor(
        base.name, base.datatype, base.shape, base.raw * s.oversize_factor)))
    texts = [t for t in sig.inputs if t.is_bytes and t.name in arrays]
    if texts:
        spec = next(t for t in valid if t.name == texts[0].name)
        # A length prefix that promises more bytes than follow.
        bad = struct.pack("<I", 1 << 20) + b"abc"
        add("malformed_bytes", _replace(valid, spec.name, Tensor(
            spec.name, "BYTES", spec.shape, bad)))
        # Well-formed BYTES that are not UTF-8: refusing them is the model's choice.
        binary = np.full(arrays[spec.name].shape, b"\xff\xfe\x00", dtype=np.object_)
        add("invalid_utf8", _replace(valid, spec.name, Tensor(
            spec.name, "BYTES", spec.shape, raw_bytes(binary, "BYTES"))),
            accepted=_REFUSED_OR_OK)
    cases.append(Case("garbage_bytes", os.urandom(512),
                      extra_ok=((grpc.StatusCode.INTERNAL, "Unable to parse request"),
                                (grpc.StatusCode.UNKNOWN, NO_RESPONSE))))
    return cases


def _send(target: SlotTarget, payload: bytes, timeout: float, *, stream: bool = False
          ) -> tuple[grpc.StatusCode, str]:
    """The status a request gets; ``stream`` sends it on ModelStreamInfer (decoupled
    models) and reads until the final response."""
    with grpc.insecure_channel(target.address) as channel:
        try:
            if stream:
                return _send_stream(channel, target, payload, timeout)
            call = channel.unary_unary(_METHOD, request_serializer=None,
                                       response_deserializer=None)
            call(payload, metadata=list(target.headers.items()), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _send_stream(channel: grpc.Channel, target: SlotTarget, payload: bytes, timeout: float
                 ) -> tuple[grpc.StatusCode, str]:
    """Triton answers a stream's bad request with an error *message* on the stream (the
    call's status stays OK): that counts as INVALID_ARGUMENT, a refusal. A stream that
    ends without its final response is UNKNOWN; one that never ends, DEADLINE_EXCEEDED."""
    request = service_pb2.ModelInferRequest()
    try:
        request.ParseFromString(payload)
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        payload = request.SerializeToString()
    except Exception:  # not a request at all (the garbage case): sent as it is
        pass
    call = channel.stream_stream(_STREAM_METHOD, request_serializer=None,
                                 response_deserializer=None)
    answers = call(iter([payload]), metadata=list(target.headers.items()), timeout=timeout)
    seen = 0
    for raw in answers:
        seen += 1
        answer = service_pb2.ModelStreamInferResponse.FromString(raw)
        if answer.error_message:
            answers.cancel()
            return grpc.StatusCode.INVALID_ARGUMENT, answer.error_message
        final = answer.infer_response.parameters.get("triton_final_response")
        if final is not None and final.bool_param:
            answers.cancel()
            return grpc.StatusCode.OK, ""
    code, details = answers.code(), answers.details() or ""
    if code != grpc.StatusCode.OK:
        return code, details
    if not seen:  # what Triton does with a message it cannot parse: a refusal
        return grpc.StatusCode.UNKNOWN, NO_RESPONSE
    return grpc.StatusCode.UNKNOWN, (f"the stream ended after {seen} responses without its "
                                     "final response")


def _same(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> bool:
    if set(before) != set(after):
        return False
    for name, value in before.items():
        other = after[name]
        if value.dtype == np.object_ or other.dtype == np.object_:
            if value.shape != other.shape or not all(
                    a == b for a, b in zip(value.reshape(-1), other.reshape(-1), strict=True)):
                return False
        elif not np.array_equal(value, other, equal_nan=True):
            return False
    return True


def check_adversarial(target: SlotTarget, sig: ModelSignature, s: AdversarialSettings,
                      hints: Hints | None = None,
                      cases: Callable[..., list[Case]] = generate_cases) -> CheckResult:
    started = time.monotonic()
    golden = random_inputs(sig, 4, seed=99, hints=hints)
    before = target.infer(sig, golden)
    results: dict[str, dict[str, object]] = {}
    failures: list[str] = []
    generated = cases(sig, hints, s)
    for case in generated:
        t0 = time.monotonic()
        code, message = _send(target, case.payload, s.timeout_s, stream=sig.decoupled)
        ok = code in case.accepted or any(
            code == c and text in message for c, text in case.extra_ok)
        results[case.name] = {"status": code.name, "message": message[:300],
                              "seconds": round(time.monotonic() - t0, 4), "refused_ok": ok}
        if not ok:
            failures.append(f"{case.name}: {code.name} {message[:120]}".strip())
    healthy, detail = True, ""
    try:
        if not _same(before, target.infer(sig, golden)):
            healthy, detail = False, "answers changed after the adversarial inputs"
    except Exception as exc:  # any failure here means the slot is not healthy
        healthy, detail = False, f"slot did not answer afterwards: {exc}"
    if not healthy:
        failures.append(detail)
    summary = (f"{len(generated)}/{len(generated)} handled as expected, slot healthy after"
               if not failures else "; ".join(failures))
    return CheckResult("adversarial", not failures, summary,
                       {"cases": results, "healthy_after": healthy, "detail": detail},
                       time.monotonic() - started, dry_run=s.dry_run)
