"""Request data built from a model's signature: random inputs within per-input hints, and
conversion to and from tritonclient's tensors. Shared by validation and load generators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from triton_slots.signature import ModelSignature, TensorSpec

#: The length used for a dynamic (``-1``) dimension when no hint or sample gives one.
DEFAULT_DYNAMIC_DIM = 8
_BYTES_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", dtype=np.uint8)


@dataclass(frozen=True)
class InputHint:
    """What the policy says about one input: concrete dims for dynamic ones (without the
    batch dimension) and a value range ``[low, high)`` for random data."""

    shape: tuple[int, ...] | None = None
    low: float | None = None
    high: float | None = None


Hints = Mapping[str, InputHint]


def concrete_dims(tensor: TensorSpec, hint: InputHint | None) -> tuple[int, ...]:
    if hint is not None and hint.shape is not None:
        return tuple(hint.shape)
    return tuple(d if d >= 0 else DEFAULT_DYNAMIC_DIM for d in tensor.dims)


def _random(tensor: TensorSpec, shape: list[int], hint: InputHint | None,
            rng: np.random.Generator) -> np.ndarray:
    low = hint.low if hint is not None and hint.low is not None else None
    high = hint.high if hint is not None and hint.high is not None else None
    if tensor.is_bytes:
        lengths = rng.integers(1, 13, size=int(np.prod(shape)) if shape else 1)
        words = [_BYTES_ALPHABET[rng.integers(0, len(_BYTES_ALPHABET), n)].tobytes()
                 for n in lengths]
        return np.array(words, dtype=np.object_).reshape(shape)
    if tensor.datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if tensor.is_float:
        lo, hi = (0.0 if low is None else low), (1.0 if high is None else high)
        return (lo + (hi - lo) * rng.random(shape)).astype(tensor.dtype)
    info = np.iinfo(tensor.dtype)
    lo = int(max(info.min, 0 if low is None else low))
    hi = int(min(info.max + 1, 100 if high is None else high))
    return rng.integers(lo, max(hi, lo + 1), size=shape).astype(tensor.dtype)


def random_inputs(sig: ModelSignature, rows: int = 1, *, seed: int = 0,
                  hints: Hints | None = None, optional: bool = False
                  ) -> dict[str, np.ndarray]:
    """Random inputs for ``rows`` rows (a non-batching model gets one request's worth
    whatever ``rows`` says). Optional inputs are included only with ``optional``."""
    rng = np.random.default_rng(seed)
    hints = hints or {}
    out: dict[str, np.ndarray] = {}
    for tensor in sig.inputs:
        if tensor.optional and not optional:
            continue
        hint = hints.get(tensor.name)
        shape = sig.full_shape(tensor, concrete_dims(tensor, hint), rows)
        out[tensor.name] = _random(tensor, shape, hint, rng)
    return out


def rows_of(sig: ModelSignature, arrays: Mapping[str, np.ndarray]) -> int:
    """How many rows a request holds (1 for a non-batching model)."""
    if not sig.batched or not arrays:
        return 1
    return int(next(iter(arrays.values())).shape[0])


def take_rows(sig: ModelSignature, arrays: Mapping[str, np.ndarray], start: int,
              stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in arrays.items()} if sig.batched else dict(arrays)


def infer_inputs(module: Any, sig: ModelSignature, arrays: Mapping[str, np.ndarray]
                 ) -> list[Any]:
    """``arrays`` as ``module.InferInput`` objects (``module`` is ``tritonclient.grpc`` or
    ``tritonclient.http``), in the signature's input order."""
    tensors = []
    for tensor in sig.inputs:
        if tensor.name not in arrays:
            continue
        data = arrays[tensor.name]
        item = module.InferInput(tensor.name, list(data.shape), tensor.datatype)
        item.set_data_from_numpy(data)
        tensors.append(item)
    return tensors


def requested_outputs(module: Any, sig: ModelSignature) -> list[Any]:
    return [module.InferRequestedOutput(t.name) for t in sig.outputs]


def outputs_of(sig: ModelSignature, result: Any) -> dict[str, np.ndarray]:
    """Every declared output of an inference result, by name."""
    out: dict[str, np.ndarray] = {}
    for tensor in sig.outputs:
        value = result.as_numpy(tensor.name)
        if value is not None:
            out[tensor.name] = value
    return out
