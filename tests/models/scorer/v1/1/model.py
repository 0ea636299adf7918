"""SCORE = sum(X), LABEL = SCORE > 2."""
import numpy as np
import triton_python_backend_utils as pb_utils

WRONG_ABOVE = None  # v2: inputs whose first value is above this get a wrong score


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy().astype(np.float32)
            score = np.array([x.sum()], dtype=np.float32)
            if WRONG_ABOVE is not None and x[0] > WRONG_ABOVE:
                score = score + np.float32(1.0)  # finite, well-formed, wrong
            label = (score > 2.0).astype(np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("SCORE", score), pb_utils.Tensor("LABEL", label)]))
        return responses
