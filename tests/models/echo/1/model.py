"""A unary (not decoupled) model: answers its input."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            "ECHO", pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy())])
            for r in requests]
