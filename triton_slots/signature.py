"""A model's signature (inputs, outputs, batching) as Triton reports it.

Built from the model configuration, either as Triton returns it
(``GET /v2/models/<m>/config``, or tritonclient's ``get_model_config(as_json=True)``)
or parsed from an artifact's ``config.pbtxt``; both give the same value. Everything that
builds requests (validation, load generators, sample checks) starts from here, so
nothing assumes a model's names, shapes or types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Triton's KServe v2 datatype names, and the numpy dtype each maps to.
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                           "UINT64"})


class SignatureError(ValueError):
    """A model configuration this module cannot describe (unknown datatype, no inputs)."""


def datatype_of(config_type: str) -> str:
    """``TYPE_FP32`` -> ``FP32``; ``TYPE_STRING`` -> ``BYTES`` (Triton's own mapping)."""
    name = config_type.removeprefix("TYPE_")
    name = "BYTES" if name == "STRING" else name
    if name not in DTYPES:
        raise SignatureError(f"unsupported tensor datatype {config_type!r}")
    return name


def numpy_dtype(datatype: str) -> np.dtype:
    return np.dtype(DTYPES[datatype])


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, KServe datatype and dims *without* the batch dimension
    (``-1`` for a dynamic dimension)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def is_float(self) -> bool:
        return self.datatype in FLOAT_TYPES

    @property
    def is_bytes(self) -> bool:
        return self.datatype == "BYTES"

    @property
    def is_exact(self) -> bool:
        """Outputs compared exactly (integers, booleans, bytes), not within a tolerance."""
        return not self.is_float

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.dims)

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.datatype)


@dataclass(frozen=True)
class ModelSignature:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    #: A decoupled model answers one request with a stream of responses (gRPC
    #: ModelStreamInfer only; Triton refuses it ModelInfer), the last flagged final.
    decoupled: bool = False

    @property
    def batched(self) -> bool:
        """Triton adds a leading batch dimension to every tensor of a batching model."""
        return self.max_batch_size > 0

    @property
    def required_inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(t for t in self.inputs if not t.optional)

    def input(self, name: str) -> TensorSpec:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def full_shape(self, tensor: TensorSpec, dims: tuple[int, ...], rows: int) -> list[int]:
        """The request shape of ``tensor`` for ``rows`` rows (the batch dimension only for
        batching models; a non-batching model takes ``rows == 1``)."""
        return [rows, *dims] if self.batched else list(dims)

    def accepted_batch_sizes(self, wanted: tuple[int, ...]) -> tuple[int, ...]:
        """The batch sizes of ``wanted`` this model accepts (1 for a non-batching model)."""
        if not self.batched:
            return (1,)
        sizes = tuple(sorted({min(b, self.max_batch_size) for b in wanted if b >= 1}))
        return sizes or (1,)

    def describe(self) -> str:
        def one(t: TensorSpec) -> str:
            dims = ",".join(str(d) for d in t.dims)
            return f"{t.name} {t.datatype}[{dims}]" + (" optional" if t.optional else "")
        batching = f"batched up to {self.max_batch_size}" if self.batched else "no batching"
        return (f"{self.name}: inputs {', '.join(one(t) for t in self.inputs)}; outputs "
                f"{', '.join(one(t) for t in self.outputs)}; {batching}"
                + ("; decoupled (a stream of responses per request)" if self.decoupled else ""))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str | None = None) -> ModelSignature:
        """From a model configuration as JSON (Triton's field names)."""
        def tensors(key: str) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(
                    name=str(t["name"]),
                    datatype=datatype_of(str(t.get("data_type", t.get("dataType", "")))),
                    dims=tuple(int(d) for d in t.get("dims", [])),
                    optional=bool(t.get("optional", False)),
                )
                for t in config.get(key, [])
            )
        inputs, outputs = tensors("input"), tensors("output")
        model = name or str(config.get("name", ""))
        if not inputs:
            raise SignatureError(f"model {model!r} declares no inputs")
        if not outputs:
            raise SignatureError(f"model {model!r} declares no outputs")
        policy = config.get("model_transaction_policy",
                            config.get("modelTransactionPolicy", {})) or {}
        return cls(model, inputs, outputs, int(config.get("max_batch_size",
                                                          config.get("maxBatchSize", 0))),
                   decoupled=bool(policy.get("decoupled", False)))

    @classmethod
    def from_protobuf(cls, config: Any) -> ModelSignature:
        """From a parsed ``model_config_pb2.ModelConfig`` (an artifact's config.pbtxt)."""
        from google.protobuf.json_format import MessageToDict

        return cls.from_config(MessageToDict(config, preserving_proto_field_name=True))
