"""A small NumPy MLP classifier served by Triton's Python backend.

Weights live beside this file in ``weights.npz`` (W1, b1, W2, b2), so the model artifact
is self-contained and its digest covers the weights.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        weights = np.load(Path(__file__).with_name("weights.npz"))
        self.w1 = weights["W1"].astype(np.float32)
        self.b1 = weights["b1"].astype(np.float32)
        self.w2 = weights["W2"].astype(np.float32)
        self.b2 = weights["b2"].astype(np.float32)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
            logits = hidden @ self.w2 + self.b2
            logits = logits - logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            probs = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
            out = pb_utils.Tensor("PROBS", probs)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
