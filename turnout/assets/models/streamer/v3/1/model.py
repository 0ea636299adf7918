"""A small decoupled (streaming) text model, shaped like LLM serving: one request, a
stream of responses, one token each, then the final flag.

Inputs: PROMPT (one string), MAX_TOKENS (optional, default 8, clamped to 0..64). Output:
TOKEN (one string per response): the prompt's words, each reversed, in turn. Config
parameters: ``first_token_delay_s`` (time to first token) and ``token_delay_s`` (between
tokens), so versions differ only in how fast they stream; ``fault_first_token_delay_s``
is added to the first token's delay while the file ``fault_flag_file`` exists (benchmarks
make a fault at a known instant); with ``wrong_marker``, a prompt containing it gets its
words unreversed (wrong, well-formed tokens: a version wrong on some inputs).
"""

import json
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config, name, default):
    return float(config.get("parameters", {}).get(name, {}).get("string_value", default))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.first_delay = _param(config, "first_token_delay_s", 0.0)
        self.token_delay = _param(config, "token_delay_s", 0.002)
        self.fault_delay = _param(config, "fault_first_token_delay_s", 0.0)
        self.fault_flag = config.get("parameters", {}).get("fault_flag_file", {}).get(
            "string_value", "")
        self.wrong_marker = config.get("parameters", {}).get("wrong_marker", {}).get(
            "string_value", "").encode()

    def execute(self, requests):
        for request in requests:  # each stream in its own thread: execute returns at once
            threading.Thread(target=self._stream, args=(request,), daemon=True).start()
        return None

    def _stream(self, request):
        sender = request.get_response_sender()
        try:
            prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
            limit = pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS")
            count = 8 if limit is None else int(limit.as_numpy().reshape(-1)[0])
            count = max(0, min(count, 64))
            text = b" ".join(p if isinstance(p, bytes) else str(p).encode()
                             for p in prompt.reshape(-1))
            words = text.split() or [b"..."]
            late = self.fault_delay if self.fault_flag and os.path.exists(self.fault_flag) \
                else 0.0
            time.sleep(self.first_delay + late)
            for i in range(count):
                word = words[i % len(words)]
                wrong = self.wrong_marker and self.wrong_marker in text
                token = np.array([word if wrong else word[::-1]], dtype=np.object_)
                sender.send(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("TOKEN", token)]))
                time.sleep(self.token_delay)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # an error response, then the end of the stream
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
