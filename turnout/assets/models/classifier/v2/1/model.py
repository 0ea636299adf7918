"""A small NumPy MLP classifier served by Triton's Python backend.

Weights live beside this file in ``weights.npz`` (W1, b1, W2, b2), so the artifact is
self-contained and its digest covers the weights. Non-finite inputs are refused with
INVALID_ARG. Optional config parameters inject faults (used by the faulty example):
``fault_delay_ms`` sleeps per request; ``fault_nan_threshold`` returns NaN for rows whose
first feature exceeds it; with ``fault_flag_file`` set, both apply only while that file
exists (benchmarks switch a fault on at a known instant).
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameter(config: dict, key: str, default: float) -> float:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return float(value) if value not in (None, "") else default


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        weights = np.load(Path(__file__).with_name("weights.npz"))
        self.w1 = weights["W1"].astype(np.float32)
        self.b1 = weights["b1"].astype(np.float32)
        self.w2 = weights["W2"].astype(np.float32)
        self.b2 = weights["b2"].astype(np.float32)
        self.delay_s = _parameter(config, "fault_delay_ms", 0.0) / 1000.0
        self.nan_threshold = _parameter(config, "fault_nan_threshold", float("inf"))
        flag = config.get("parameters", {}).get("fault_flag_file", {}).get("string_value")
        self.flag_file = flag or None

    def _faulty(self) -> bool:
        return self.flag_file is None or os.path.exists(self.flag_file)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        logits = hidden @ self.w2 + self.b2
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        if self.nan_threshold != float("inf") and self._faulty():
            probs[x[:, 0] > self.nan_threshold] = np.nan
        return probs

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            if not np.isfinite(x).all():
                error = pb_utils.TritonError(
                    "INPUT contains NaN or Inf", pb_utils.TritonError.INVALID_ARG
                )
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            if self.delay_s and self._faulty():
                time.sleep(self.delay_s)
            out = pb_utils.Tensor("PROBS", self._forward(x))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
