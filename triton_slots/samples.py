"""Real requests supplied by the user (``spec.validation.samples``), optionally with the
outputs they must produce.

Two formats:

- ``.npz``: one array per input, keyed by the input's name, whose first axis indexes the
  samples (for a batching model each sample is one row; for a non-batching model each
  sample is one whole request). Expected outputs, if any, are keyed ``expected.<OUTPUT>``
  with the same first axis.
- ``.jsonl`` / ``.ndjson``: one KServe v2 JSON inference request per line,
  ``{"id": ..., "inputs": [{"name", "shape", "datatype", "data"}], "expected":
  [{"name", "shape", "datatype", "data"}]}`` (``id`` and ``expected`` are optional).

:func:`check_samples` compares them with a model's signature and names, for each problem,
the sample, the input and the mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from triton_slots.signature import DTYPES, ModelSignature, TensorSpec, numpy_dtype

EXPECTED_PREFIX = "expected."
MAX_SAMPLES = 100_000


class SamplesError(ValueError):
    """A samples file that cannot be read, or that does not fit the model."""


@dataclass(frozen=True)
class Sample:
    """One request: its inputs, the outputs it must produce (may be empty), and where it
    came from (``file:line`` or ``file[index]``)."""

    label: str
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)  # as the file declared them


def load_samples(path: Path, sig: ModelSignature | None = None) -> list[Sample]:
    """Read ``path``; with ``sig``, a non-batching model's ``.npz`` rows are whole requests
    and a batching model's rows get a batch dimension of 1."""
    if not path.is_file():
        raise SamplesError(f"{path}: no such samples file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, sig)
    if suffix in (".jsonl", ".ndjson"):
        return _load_jsonl(path)
    raise SamplesError(f"{path}: unknown samples format {suffix!r} (use .npz or .jsonl)")


def _load_npz(path: Path, sig: ModelSignature | None) -> list[Sample]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise SamplesError(f"{path}: not a readable .npz file: {exc}") from exc
    if not arrays:
        raise SamplesError(f"{path}: holds no arrays")
    counts = {key: (a.shape[0] if a.ndim else -1) for key, a in arrays.items()}
    if len(set(counts.values())) != 1 or -1 in counts.values():
        raise SamplesError(f"{path}: every array needs the same first (sample) axis; got "
                           + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    count = next(iter(counts.values()))
    if count > MAX_SAMPLES:
        raise SamplesError(f"{path}: {count} samples; at most {MAX_SAMPLES}")
    batched = sig is not None and sig.batched
    samples = []
    for index in range(count):
        rows = {k: _row(a, index, batched) for k, a in arrays.items()}
        inputs = {k: v for k, v in rows.items() if not k.startswith(EXPECTED_PREFIX)}
        expected = {k.removeprefix(EXPECTED_PREFIX): v for k, v in rows.items()
                    if k.startswith(EXPECTED_PREFIX)}
        samples.append(Sample(f"{path.name}[{index}]", inputs, expected))
    return samples


def _row(a: np.ndarray, index: int, batched: bool) -> np.ndarray:
    value = np.asarray(a[index])
    if a.dtype.kind in "US":  # text arrays become BYTES objects
        value = np.array([str(v).encode() if a.dtype.kind == "U" else bytes(v)
                          for v in np.ravel(value)], dtype=np.object_).reshape(value.shape)
    return value[None, ...] if batched else value


def kserve_tensor(item: Any, where: str) -> tuple[str, str, np.ndarray]:
    """A KServe v2 JSON tensor (name, datatype, shape, data) as (name, datatype, array);
    :class:`SamplesError` naming ``where`` and the tensor when it is not one."""
    if not isinstance(item, dict):
        raise SamplesError(f"{where}: each tensor must be an object with name, shape, "
                           "datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in item]
    if missing:
        raise SamplesError(f"{where}: tensor {item.get('name', '?')!r} lacks "
                           + ", ".join(missing))
    name, datatype, shape = str(item["name"]), str(item["datatype"]), item["shape"]
    if datatype not in DTYPES:
        raise SamplesError(f"{where}: tensor {name!r}: unknown datatype {datatype!r} "
                           f"(one of {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SamplesError(f"{where}: tensor {name!r}: shape must be a list of "
                           "non-negative integers")
    flat = np.ravel(np.array(item["data"], dtype=object))
    if flat.size != int(np.prod(shape)):
        raise SamplesError(f"{where}: tensor {name!r}: {flat.size} values for shape {shape}")
    try:
        if datatype == "BYTES":
            array = np.array([str(v).encode() if not isinstance(v, bytes) else v
                              for v in flat], dtype=np.object_).reshape(shape)
        else:
            array = np.array(list(flat), dtype=numpy_dtype(datatype)).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SamplesError(f"{where}: tensor {name!r}: data is not {datatype}: {exc}") from exc
    return name, datatype, array


def _load_jsonl(path: Path) -> list[Sample]:
    samples = []
    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as exc:
            raise SamplesError(f"{path}: not UTF-8 text: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SamplesError(f"{where}: not JSON: {exc.msg}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
            raise SamplesError(f"{where}: expected a KServe v2 request with an 'inputs' list")
        inputs, datatypes = {}, {}
        for item in doc["inputs"]:
            name, datatype, array = kserve_tensor(item, where)
            inputs[name], datatypes[name] = array, datatype
        expected = {}
        for item in doc.get("expected", []) or []:
            name, _, array = kserve_tensor(item, where)
            expected[name] = array
        label = f"{where}" + (f" (id {doc['id']})" if "id" in doc else "")
        samples.append(Sample(label, inputs, expected, datatypes))
        if len(samples) > MAX_SAMPLES:
            raise SamplesError(f"{path}: more than {MAX_SAMPLES} samples")
    if not samples:
        raise SamplesError(f"{path}: holds no samples")
    return samples


def _datatype_of(array: np.ndarray, declared: str | None) -> str:
    if declared:
        return declared
    if array.dtype == np.object_:
        return "BYTES"
    for name, dtype in DTYPES.items():
        if dtype is not np.object_ and np.dtype(dtype) == array.dtype:
            return name
    return str(array.dtype)


def _shape_problem(sig: ModelSignature, tensor: TensorSpec, shape: tuple[int, ...]
                   ) -> str | None:
    dims = tensor.dims
    if sig.batched:
        if len(shape) != len(dims) + 1:
            return (f"shape {list(shape)} has rank {len(shape)}; the model expects "
                    f"[batch, {', '.join(str(d) for d in dims)}]")
        if not 1 <= shape[0] <= sig.max_batch_size:
            return f"batch of {shape[0]} rows; the model takes 1 to {sig.max_batch_size}"
        shape = shape[1:]
    elif len(shape) != len(dims):
        return f"shape {list(shape)}; the model expects {list(dims)}"
    for got, want in zip(shape, dims, strict=True):
        if want >= 0 and got != want:
            return f"shape {list(shape)}; the model expects {list(dims)} (-1: any length)"
    return None


def check_samples(sig: ModelSignature, samples: Iterable[Sample], *, limit: int = 20
                  ) -> list[str]:
    """Every mismatch between ``samples`` and the signature (at most ``limit``), each
    naming the sample, the tensor and what differs. Empty: they fit."""
    problems: list[str] = []
    input_names = [t.name for t in sig.inputs]
    output_names = [t.name for t in sig.outputs]
    for sample in samples:
        for name, array in sample.inputs.items():
            if name not in input_names:
                problems.append(f"{sample.label}: input {name!r} is not an input of "
                                f"{sig.name} (inputs: {', '.join(input_names)})")
                continue
            tensor = sig.input(name)
            datatype = _datatype_of(array, sample.datatypes.get(name))
            if datatype != tensor.datatype:
                problems.append(f"{sample.label}: input {name!r} is {datatype}; {sig.name} "
                                f"expects {tensor.datatype}")
            shape_issue = _shape_problem(sig, tensor, tuple(array.shape))
            if shape_issue:
                problems.append(f"{sample.label}: input {name!r}: {shape_issue}")
        for tensor in sig.required_inputs:
            if tensor.name not in sample.inputs:
                problems.append(f"{sample.label}: required input {tensor.name!r} is missing")
        for name in sample.expected:
            if name not in output_names:
                problems.append(f"{sample.label}: expected output {name!r} is not an output "
                                f"of {sig.name} (outputs: {', '.join(output_names)})")
        if len(problems) >= limit:
            problems = [*problems[:limit], "... (more problems not shown)"]
            break
    return problems
