"""Sends one token, then never the final flag (a stream that never ends)."""
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._stream, args=(request,), daemon=True).start()
        return None

    def _stream(self, request):
        sender = request.get_response_sender()
        sender.send(pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("TOKEN", np.array([b"first"], dtype=np.object_))]))
        time.sleep(3600)
