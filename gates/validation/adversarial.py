"""Adversarial inputs: each must be refused with a client error, promptly, and the slot
must still be healthy and answer exactly as before afterwards.

Accepted answers are INVALID_ARGUMENT (Triton's and the model's own refusals), plus, for
the garbage-bytes case only, gRPC's INTERNAL "Unable to parse request": gRPC itself
answers that before Triton sees the message. Any other status (UNAVAILABLE, UNKNOWN,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...), a success, or a hang fails the case.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from gates.validation.report import CheckResult
from gates.validation.settings import AdversarialSettings
from gates.validation.target import ModelSignature, SlotTarget

_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT}


@dataclass(frozen=True)
class Case:
    name: str
    request: Callable[[ModelSignature, AdversarialSettings], bytes]
    extra_ok: tuple[tuple[grpc.StatusCode, str], ...] = ()


def _request(sig: ModelSignature, *, name: str | None = None, dtype: str | None = None,
             shape: list[int] | None = None, raw: bytes | None = None,
             inputs: int = 1) -> bytes:
    data = sig.sample(1)
    request = service_pb2.ModelInferRequest(model_name=sig.name)
    for index in range(inputs):
        tensor = request.inputs.add()
        tensor.name = name or (sig.input_name if index == 0 else f"{sig.input_name}_EXTRA")
        tensor.datatype = dtype or sig.input_dtype
        tensor.shape.extend(shape if shape is not None else list(data.shape))
        request.raw_input_contents.append(raw if raw is not None else data.tobytes())
    return request.SerializeToString()


def _with_value(sig: ModelSignature, value: float) -> bytes:
    data = sig.sample(1)
    data.flat[0] = value
    return _request(sig, raw=data.tobytes())


def _big_batch(sig: ModelSignature, _: AdversarialSettings) -> bytes:
    rows = max(sig.max_batch_size, 1) + 1
    data = sig.sample(rows)
    return _request(sig, shape=list(data.shape), raw=data.tobytes())


CASES: tuple[Case, ...] = (
    Case("wrong_shape", lambda s, _: _request(
        s, shape=[1, *(d + 3 for d in s.input_dims)],
        raw=np.zeros([1, *(d + 3 for d in s.input_dims)], np.float32).tobytes())),
    Case("wrong_dtype", lambda s, _: _request(
        s, dtype="FP64" if s.input_dtype != "FP64" else "FP32",
        raw=s.sample(1).astype(np.float64 if s.input_dtype != "FP64" else np.float32).tobytes())),
    Case("missing_input", lambda s, _: service_pb2.ModelInferRequest(
        model_name=s.name).SerializeToString()),
    Case("unknown_input_name", lambda s, _: _request(s, name="NOT_AN_INPUT")),
    Case("extra_input", lambda s, _: _request(s, inputs=2)),
    Case("nan_values", lambda s, _: _with_value(s, float("nan"))),
    Case("inf_values", lambda s, _: _with_value(s, float("inf"))),
    Case("empty_batch", lambda s, _: _request(s, shape=[0, *s.input_dims], raw=b"")),
    Case("batch_above_max", _big_batch),
    Case("oversized_payload", lambda s, a: _request(
        s, raw=s.sample(1).tobytes() * a.oversize_factor)),
    Case("garbage_bytes", lambda s, _: os.urandom(512),
         extra_ok=((grpc.StatusCode.INTERNAL, "Unable to parse request"),)),
)


def _send(target: SlotTarget, payload: bytes, timeout: float) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(target.address) as channel:
        call = channel.unary_unary(_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(payload, metadata=list(target.headers.items()), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check_adversarial(target: SlotTarget, sig: ModelSignature,
                      s: AdversarialSettings) -> CheckResult:
    started = time.monotonic()
    golden = sig.sample(4, seed=99)
    before = target.infer(sig, golden)
    cases: dict[str, dict[str, object]] = {}
    failures: list[str] = []
    for case in CASES:
        t0 = time.monotonic()
        code, message = _send(target, case.request(sig, s), s.timeout_s)
        ok = code in _CLIENT_ERRORS or any(
            code == c and text in message for c, text in case.extra_ok
        )
        cases[case.name] = {"status": code.name, "message": message[:300],
                            "seconds": round(time.monotonic() - t0, 4), "refused_ok": ok}
        if not ok:
            failures.append(f"{case.name}: {code.name}")
    healthy, detail = True, ""
    try:
        after = target.infer(sig, golden)
        if not np.array_equal(before, after, equal_nan=True):
            healthy, detail = False, "answers changed after the adversarial inputs"
    except Exception as exc:  # any failure here means the slot is not healthy
        healthy, detail = False, f"slot did not answer afterwards: {exc}"
    if not healthy:
        failures.append(detail)
    summary = (f"{len(CASES) - len(failures)}/{len(CASES)} refused with client errors, "
               "slot healthy after") if not failures else "; ".join(failures)
    return CheckResult("adversarial", not failures, summary,
                       {"cases": cases, "healthy_after": healthy, "detail": detail},
                       time.monotonic() - started)
