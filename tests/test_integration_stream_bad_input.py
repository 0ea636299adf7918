"""Streams that go wrong, through a real Envoy in front of real Triton servers: a model
that never sends its final response, a response larger than a client accepts, HTTP
``generate_stream`` to a model that is not decoupled and ``generate`` to one that is.
Each ends with the server's or the client's own clear answer, or within the stack's
``stream_idle_timeout_s`` (here 3 s): never a hang, never a 5xx from Envoy hiding it."""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.live import Live
from triton_slots.signature import ModelSignature
from triton_slots.streaming import StreamError, stream_infer

pytestmark = pytest.mark.integration
MODELS = Path(__file__).resolve().parent / "models"
IDLE_S = 3.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    stack = Live.start(tmp_path_factory.mktemp("bad-streams"),
                       models=[MODELS / "hangs", MODELS / "big_stream", MODELS / "echo"],
                       stream_idle_timeout_s=IDLE_S)
    try:
        yield stack
    finally:
        stack.stop()


def _direct(live: Live) -> str:
    endpoint = live.servers["blue"][0].endpoint
    return f"{endpoint.host}:{endpoint.grpc_port}"


def _prompt() -> list[grpcclient.InferInput]:
    prompt = grpcclient.InferInput("PROMPT", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"hello"], dtype=np.object_))
    return [prompt]


def test_a_stream_that_never_ends_is_ended_by_the_idle_timeout_not_left_hanging(live):
    """Direct to Triton such a stream stays open for ever; through the ingress the first
    token arrives, then Envoy ends the stream after stream_idle_timeout_s of silence, and
    the client sees an error on the stream (not a hang). Turnout's own stream reader names
    a hung stream at its timeout, on either path."""
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(live.ingress)
    try:
        client.start_stream(lambda result, error: answers.put((result, error, time.monotonic())))
        started = time.monotonic()
        client.async_stream_infer("hangs", _prompt(), enable_empty_final_response=True)
        result, error, _ = answers.get(timeout=5)
        assert error is None and result.as_numpy("TOKEN")[0] == b"first"
        result, error, at = answers.get(timeout=IDLE_S + 5)
        assert result is None and error is not None
        assert IDLE_S - 0.5 <= at - started <= IDLE_S + 2, at - started
        client.stop_stream()
    finally:
        client.close()
    for target in (live.ingress, _direct(live)):
        client = grpcclient.InferenceServerClient(target)
        try:
            sig = ModelSignature.from_config(
                client.get_model_config("hangs", as_json=True)["config"], name="hangs")
            started = time.monotonic()
            with pytest.raises(StreamError, match=r"^hangs: no final response within 1 s "
                                                  r"\(1 responses so far\): a hung stream$"):
                stream_infer(client, sig, {"PROMPT": np.array([b"x"], dtype=np.object_)},
                             timeout=1.0)
            assert time.monotonic() - started < 3
        finally:
            client.close()


def test_a_response_larger_than_the_client_accepts_is_the_clients_clear_error(live):
    """The ingress passes a 5 MB response whole (Envoy flow-controls a stream, it does not
    cap a message): tritonclient (2 GiB limit) reads it; a gRPC client with the default
    4 MiB limit gets its own RESOURCE_EXHAUSTED naming both sizes, after the small first
    response: no 5xx from Envoy, no hang."""
    size = grpcclient.InferInput("SIZE", [1], "INT32")
    size.set_data_from_numpy(np.array([5_000_000], dtype=np.int32))
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(live.ingress)
    try:
        client.start_stream(lambda result, error: answers.put((result, error)))
        client.async_stream_infer("big_stream", [size], enable_empty_final_response=True)
        lengths = []
        for _ in range(3):
            result, error = answers.get(timeout=10)
            assert error is None, error
            token = result.as_numpy("TOKEN")
            lengths.append(None if token is None else len(token[0]))
        assert lengths == [5, 5_000_000, None]  # the last one: the empty final response
        client.stop_stream()
    finally:
        client.close()

    request = service_pb2.ModelInferRequest(model_name="big_stream")
    tensor = request.inputs.add(name="SIZE", datatype="INT32", shape=[1])
    tensor.contents.int_contents.append(5_000_000)
    with grpc.insecure_channel(live.ingress) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(iter([request]), timeout=10)
        first = next(responses)
        assert first.error_message == "" and first.infer_response.model_name == "big_stream"
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max (5000" in info.value.details()
    assert "vs. 4194304)" in info.value.details()


def _post(url: str, body: dict, timeout: float = 10) -> tuple[int | str, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_http_generate_calls_get_tritons_own_answers_through_the_ingress(live):
    """generate_stream to a model that is not decoupled: Triton answers one server-sent
    event, the same through the ingress as direct. generate (one answer) to a decoupled
    model that never ends: direct it hangs; through the ingress it is ended by the idle
    timeout, without a body, never a 5xx from Envoy."""
    endpoint = live.servers["blue"][0].endpoint
    direct = f"http://{endpoint.host}:{endpoint.http_port}"
    ingress = f"http://{live.ingress}"
    answers = {base: _post(f"{base}/v2/models/echo/generate_stream", {"TEXT": "hi"})
               for base in (direct, ingress)}
    assert answers[direct] == answers[ingress] == (
        200, b'data: {"ECHO":"hi","model_name":"echo","model_version":"1"}\n\n')
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        _post(f"{ingress}/v2/models/hangs/generate", {"PROMPT": "hi"}, timeout=IDLE_S + 5)
    assert IDLE_S - 0.5 <= time.monotonic() - started <= IDLE_S + 2
    assert not isinstance(info.value, urllib.error.HTTPError), info.value  # no 5xx
    assert "timed out" not in str(info.value)  # ended by Envoy, not by the client's wait
