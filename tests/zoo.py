"""Differently shaped Triton Python-backend models written for the tests.

Each kind is one ``model.py`` plus a ``config.pbtxt``; a variant is chosen by the config
parameter ``variant``: ``good`` (the reference answers), ``wrong`` (changes an output),
``slow`` (sleeps ``delay_ms`` per request). Versions of the same kind with the same
variant answer identically, so a rollout of ``good`` onto ``good`` passes parity.

- ``pair``: two FP32 inputs of shape [4], no batching, two outputs (SUM FP32, ARGMAX INT32).
- ``bert``: batched INT64 ``input_ids`` and ``attention_mask`` with a dynamic sequence
  length, outputs LOGITS FP32 [2] (class scores) and TOKENS INT64 [1].
- ``text``: BYTES in, BYTES out (upper-cased), batched, with an optional INT32 input.
- ``classifier``: the example model (copied from ``examples/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"

_COMMON = '''
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else default


class Base:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.variant = _param(config, "variant", "good")
        self.delay_s = float(_param(config, "delay_ms", "25")) / 1000.0

    def execute(self, requests):
        responses = []
        for request in requests:
            if self.variant == "slow":
                time.sleep(self.delay_s)
            try:
                tensors = self.run(request)
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


def _get(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
'''

_PAIR = _COMMON + '''

class TritonPythonModel(Base):
    def run(self, request):
        a, b = _get(request, "A"), _get(request, "B")
        total = (a + b).astype(np.float32)
        if self.variant == "wrong":
            total = total + np.float32(0.5)
        arg = np.array([int(np.argmax(a * b))], dtype=np.int32)
        return [pb_utils.Tensor("SUM", total), pb_utils.Tensor("ARGMAX", arg)]
'''

_BERT = _COMMON + '''

class TritonPythonModel(Base):
    def run(self, request):
        ids, mask = _get(request, "input_ids"), _get(request, "attention_mask")
        if ids.shape != mask.shape:
            raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} differ")
        if (ids < 0).any() or (ids >= 1000).any():
            raise ValueError("input_ids outside the vocabulary [0, 1000)")
        used = (ids * mask).astype(np.float64)
        score = (used % 97).sum(axis=1) / np.maximum(mask.sum(axis=1), 1) / 97.0
        logits = np.stack([score, 1.0 - score], axis=1).astype(np.float32)
        if self.variant == "wrong":
            logits = logits[:, ::-1].copy()
        tokens = mask.sum(axis=1, keepdims=True).astype(np.int64)
        return [pb_utils.Tensor("LOGITS", logits), pb_utils.Tensor("TOKENS", tokens)]
'''

_TEXT = _COMMON + '''

class TritonPythonModel(Base):
    def run(self, request):
        text = _get(request, "TEXT")
        repeat = _get(request, "REPEAT")
        times = 1 if repeat is None else int(repeat.reshape(-1)[0])
        out = []
        for row in text.reshape(-1):
            value = row if isinstance(row, bytes) else str(row).encode()
            try:
                decoded = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"TEXT is not UTF-8: {exc}") from None
            result = decoded.upper() * max(times, 1)
            if self.variant == "wrong":
                result = result[::-1]
            out.append(result.encode())
        array = np.array(out, dtype=np.object_).reshape(text.shape)
        return [pb_utils.Tensor("UPPER", array)]
'''

_CONFIGS = {
    "pair": '''name: "{name}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "A" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "B" data_type: TYPE_FP32 dims: [ 4 ] }}
]
output [
  {{ name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "ARGMAX" data_type: TYPE_INT32 dims: [ 1 ] }}
]
''',
    "bert": '''name: "{name}"
backend: "python"
max_batch_size: 8
input [
  {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }}
]
output [
  {{ name: "LOGITS" data_type: TYPE_FP32 dims: [ 2 ] }},
  {{ name: "TOKENS" data_type: TYPE_INT64 dims: [ 1 ] }}
]
''',
    "text": '''name: "{name}"
backend: "python"
max_batch_size: 16
input [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "REPEAT" data_type: TYPE_INT32 dims: [ 1 ] optional: true }}
]
output [
  {{ name: "UPPER" data_type: TYPE_STRING dims: [ 1 ] }}
]
''',
}
_CODE = {"pair": _PAIR, "bert": _BERT, "text": _TEXT}
KINDS = ("pair", "bert", "text", "classifier")


def write_model(dest: Path, kind: str, *, name: str | None = None, variant: str = "good",
                delay_ms: int = 25) -> Path:
    """Write model ``kind`` (variant ``variant``) to ``dest`` and return ``dest``."""
    if kind == "classifier":
        source = {"good": "v2", "slow": "v3", "wrong": "v3"}[variant]
        shutil.copytree(EXAMPLES / source, dest)
        if name:
            config = dest / "config.pbtxt"
            config.write_text(config.read_text().replace('"classifier"', f'"{name}"', 1))
        return dest
    (dest / "1").mkdir(parents=True)
    config = _CONFIGS[kind].format(name=name or kind)
    config += (f'parameters [ {{ key: "variant" value: {{ string_value: "{variant}" }} }},\n'
               f'  {{ key: "delay_ms" value: {{ string_value: "{delay_ms}" }} }} ]\n'
               'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    (dest / "config.pbtxt").write_text(config)
    (dest / "1" / "model.py").write_text(_CODE[kind])
    return dest
