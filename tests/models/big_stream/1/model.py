"""One small token, then one token of SIZE bytes, then the final flag."""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            size = int(pb_utils.get_input_tensor_by_name(request, "SIZE").as_numpy()[0])
            for token in (b"small", b"x" * size):
                sender.send(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("TOKEN", np.array([token], dtype=np.object_))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
