"""One request to a decoupled (streaming) model over gRPC ``ModelStreamInfer``: every
response until the one flagged final, with its timing (time to first response, the gaps
between responses). A stream that ends in an error, or sends no final response within the
timeout (a hung stream), raises :class:`StreamError` naming which. :class:`LongStream` is
one stream carrying many requests, renewed before the ingress's age bound ends it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Mapping
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
    stream = LongStream(client, sig, renew_after_s=None, headers=headers, timeout=timeout)
    try:
        return stream.infer(arrays)
    finally:
        stream.close()


def _send_and_read(client: grpcclient.InferenceServerClient, sig: ModelSignature,
                   arrays: Mapping[str, np.ndarray], answers: queue.Queue[tuple[Any, Any]],
                   timeout: float) -> StreamAnswer:
    """Send one request on the open stream and read its responses to the final one."""
    answer = StreamAnswer()
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


@dataclass
class StreamCounts:
    """What happened to one long-lived stream's requests and openings."""

    requests: int = 0
    opened: int = 0
    renewed: int = 0  # reopened at a request boundary because it had reached its age
    ended_idle: int = 0  # the ingress ended it between requests (reopened, nothing lost)
    cut: int = 0  # ended with a request in flight: that request failed


class LongStream:
    """One ``ModelStreamInfer`` stream kept open for many requests, one at a time (how
    chat-style clients use it), that follows the ingress's weights: once older than
    ``renew_after_s`` it reopens at the next request boundary, before the ingress's
    ``stream_max_age_s`` ends it (give half of that; None never renews: the stream then
    moves only when the ingress ends it, which may cut a response). A stream the ingress
    ended between requests is reopened for the next one; nothing is replayed."""

    def __init__(self, client: grpcclient.InferenceServerClient, sig: ModelSignature, *,
                 renew_after_s: float | None, headers: Mapping[str, str] | None = None,
                 timeout: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.sig, self.renew_after_s = client, sig, renew_after_s
        self.headers, self.timeout, self.clock = dict(headers or {}), timeout, clock
        self.counts = StreamCounts()
        self._answers: queue.Queue[tuple[Any, Any]] | None = None
        self._opened_at = 0.0

    def infer(self, arrays: Mapping[str, np.ndarray]) -> StreamAnswer:
        """One request on the stream (opened, renewed or reopened first as needed), read to
        its final response; :class:`StreamError` if it failed (the stream is then closed
        and the next request opens a new one)."""
        if self._answers is not None and not self._answers.empty():
            self.counts.ended_idle += 1  # only an end can wait here: requests were read out
            self.close()
        if self._answers is not None and self.renew_after_s is not None \
                and self.clock() - self._opened_at >= self.renew_after_s:
            self.counts.renewed += 1
            self.close()
        if self._answers is None:
            answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
            self.client.start_stream(lambda result, error: answers.put((result, error)),
                                     headers=self.headers)
            self._answers, self._opened_at = answers, self.clock()
            self.counts.opened += 1
        self.counts.requests += 1
        try:
            return _send_and_read(self.client, self.sig, arrays, self._answers, self.timeout)
        except StreamError:
            self.counts.cut += 1
            self.close()
            raise

    def close(self) -> None:
        if self._answers is not None:
            self._answers = None
            self.client.stop_stream(cancel_requests=True)
