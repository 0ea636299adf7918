"""SCORE = sum(X), LABEL = SCORE > 2. With the config parameter ``wrong_above`` (a "v2"),
inputs whose first value is above it get a SCORE 1 too high (finite, well-formed, wrong;
LABEL follows it): samples that all stay below it cannot tell. With ``slow_above``, such
inputs are answered 3 s late (a candidate that hangs on some inputs)."""
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        wrong = parameters.get("wrong_above", {}).get("string_value")
        self.wrong_above = None if wrong is None else float(wrong)
        slow = parameters.get("slow_above", {}).get("string_value")
        self.slow_above = None if slow is None else float(slow)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy().astype(np.float32)
            score = np.array([x.sum()], dtype=np.float32)
            if self.slow_above is not None and x[0] > self.slow_above:
                time.sleep(3.0)
            if self.wrong_above is not None and x[0] > self.wrong_above:
                score = score + np.float32(1.0)  # finite, well-formed, wrong
            label = (score > 2.0).astype(np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("SCORE", score), pb_utils.Tensor("LABEL", label)]))
        return responses
