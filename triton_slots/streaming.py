"""One request to a decoupled (streaming) model over gRPC ``ModelStreamInfer``: every
response until the one flagged final, with its timing (time to first response, the gaps
between responses). A stream that ends in an error, or sends no final response within the
timeout (a hung stream), raises :class:`StreamError` naming which.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from triton_slots.signature import ModelSignature
from triton_slots.tensors import infer_inputs, requested_outputs


class StreamError(RuntimeError):
    """The stream answered an error, or never its final response."""


@dataclass
class StreamAnswer:
    """The responses of one stream (outputs by name each) and when they came."""

    responses: list[dict[str, np.ndarray]] = field(default_factory=list)
    first_s: float | None = None  # time to the first response that carried outputs
    gaps_s: list[float] = field(default_factory=list)  # between responses with outputs
    total_s: float = 0.0

    def joined(self, sig: ModelSignature) -> dict[str, np.ndarray]:
        """Every output's responses joined along the first axis: two streams are equal
        exactly when their joined outputs are (an empty stream joins to empty arrays)."""
        joined = {}
        for spec in sig.outputs:
            parts = [r[spec.name] for r in self.responses if spec.name in r]
            joined[spec.name] = (np.concatenate([p.reshape(-1) for p in parts])
                                 if parts else np.zeros(0, dtype=spec.dtype))
        return joined


def _final(result: Any) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and \
        parameters["triton_final_response"].bool_param


def stream_infer(client: grpcclient.InferenceServerClient, sig: ModelSignature,
                 arrays: Mapping[str, np.ndarray], *, headers: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> StreamAnswer:
    """Send one request on a new stream of ``client`` and read it to its final response."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(lambda result, error: answers.put((result, error)),
                        headers=dict(headers or {}))
    answer = StreamAnswer()
    try:
        started = last = time.monotonic()
        client.async_stream_infer(sig.name, infer_inputs(grpcclient, sig, arrays),
                                  outputs=requested_outputs(grpcclient, sig),
                                  enable_empty_final_response=True)
        deadline = started + timeout
        while True:
            try:
                result, error = answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise StreamError(f"{sig.name}: no final response within {timeout:g} s "
                                  f"({len(answer.responses)} responses so far): a hung "
                                  "stream") from None
            if error is not None:
                raise StreamError(f"{sig.name}: the stream answered an error after "
                                  f"{len(answer.responses)} responses: {error}")
            now = time.monotonic()
            outputs = {spec.name: result.as_numpy(spec.name) for spec in sig.outputs
                       if result.as_numpy(spec.name) is not None}
            if outputs:
                if answer.first_s is None:
                    answer.first_s = now - started
                else:
                    answer.gaps_s.append(now - last)
                last = now
                answer.responses.append(outputs)
            if _final(result):
                answer.total_s = now - started
                return answer
    finally:
        client.stop_stream(cancel_requests=True)
