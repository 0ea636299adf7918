"""The shadow comparison on its own: decoding Envoy's tap traces (gRPC and HTTP, refusals,
truncated bodies, what is not a shadowed request), the per-output rules, pairing with
timeouts, and the shadow gates (fixed thresholds and the sequential test)."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from gates.metrics.evaluator import measure
from gates.metrics.measurement import Phase
from gates.metrics.sources import Query, ShadowSource
from gates.shadow.compare import EXAMPLES, Pairer, ShadowStats, differences
from gates.shadow.exchange import Exchange, decode
from gates.validation.settings import OutputTolerance, ParitySettings
from turnout.policy.model import MetricSpec


def _frame(message: bytes) -> str:
    return base64.b64encode(struct.pack(">BI", 0, len(message)) + message).decode()


def _grpc_trace(side: str, *, request_id: str = "r1", score: float = 1.0,
                status: str = "0", message: str = "", x: float = 0.5,
                truncated: bool = False, at: tuple[str, str] = ("00.000", "00.010")) -> dict:
    request = service_pb2.ModelInferRequest(model_name="scorer")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=[1])
    tensor.contents.fp32_contents.append(x)
    response = service_pb2.ModelInferResponse(model_name="scorer")
    output = response.outputs.add(name="SCORE", datatype="FP32", shape=[1])
    response.raw_output_contents.append(np.array([score], dtype=np.float32).tobytes())
    del output
    trailers = [{"key": "grpc-status", "value": status}]
    if message:
        trailers.append({"key": "grpc-message", "value": message})
    return {"http_buffered_trace": {
        "request": {"headers": [{"key": "content-type", "value": "application/grpc"},
                                {"key": "x-request-id", "value": request_id}],
                    "body": {"as_bytes": _frame(request.SerializeToString())},
                    "headers_received_time": f"2026-12-07T10:00:{at[0]}Z"},
        "response": {"headers": [{"key": ":status", "value": "200"},
                                 {"key": "x-turnout-shadow", "value": side}],
                     "body": {"as_bytes": "" if status != "0" else _frame(
                         response.SerializeToString()), "truncated": truncated},
                     "trailers": trailers,
                     "headers_received_time": f"2026-12-07T10:00:{at[1]}Z"}}}


def test_grpc_traces_decode_to_outputs_errors_and_latency():
    live = decode(_grpc_trace("live", score=2.5))
    assert live is not None and live.side == "live" and live.request_id == "r1"
    assert live.model == "scorer" and live.error is None and live.undecodable is None
    assert live.outputs["SCORE"].tolist() == [2.5]
    assert live.latency_s == pytest.approx(0.010)
    refused = decode(_grpc_trace("copy", status="3", message="bad input"))
    assert refused is not None and refused.error == "gRPC status 3: bad input"
    assert decode(_grpc_trace("copy", truncated=True)).truncated  # type: ignore[union-attr]
    assert live.request_digest == decode(_grpc_trace("copy")).request_digest  # type: ignore
    assert live.request_digest != decode(_grpc_trace("copy", x=0.9)).request_digest  # type: ignore
    # Not a shadowed request: no mark, or no request id.
    unmarked = _grpc_trace("live")
    unmarked["http_buffered_trace"]["response"]["headers"].pop()
    assert decode(unmarked) is None
    anonymous = _grpc_trace("live")
    anonymous["http_buffered_trace"]["request"]["headers"].pop()
    assert decode(anonymous) is None
    garbled = _grpc_trace("live")
    garbled["http_buffered_trace"]["request"]["body"]["as_bytes"] = "AAAA"
    assert decode(garbled).undecodable == "short gRPC message"  # type: ignore[union-attr]
    empty = _grpc_trace("live")
    empty["http_buffered_trace"]["request"]["body"]["as_bytes"] = ""
    assert decode(empty).undecodable == "no gRPC message"  # type: ignore[union-attr]


def test_http_traces_decode_json_outputs_and_refusals():
    def trace(status: str, body: dict | str) -> dict:
        text = body if isinstance(body, str) else json.dumps(body)
        return {"http_buffered_trace": {
            "request": {"headers": [{"key": ":path", "value": "/v2/models/scorer/infer"},
                                    {"key": "x-request-id", "value": "h1"}],
                        "body": {"as_bytes": base64.b64encode(b"{}").decode()}},
            "response": {"headers": [{"key": ":status", "value": status},
                                     {"key": "x-turnout-shadow", "value": "live"}],
                         "body": {"as_bytes": base64.b64encode(text.encode()).decode()}}}}

    answer = decode(trace("200", {"outputs": [
        {"name": "SCORE", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]},
        {"name": "WORD", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}))
    assert answer is not None and answer.model == "scorer" and answer.latency_s is None
    assert answer.outputs["SCORE"].shape == (1, 2) and answer.outputs["WORD"].tolist() == [b"hi"]
    refused = decode(trace("400", '{"error": "bad"}'))
    assert refused.error == 'HTTP 400: {"error": "bad"}'  # type: ignore[union-attr]
    assert decode(trace("200", "not json")).undecodable  # type: ignore[union-attr]


def _exchange(side: str, **outputs: np.ndarray) -> Exchange:
    return Exchange(side, "r", model="m", request_digest="d", outputs=outputs,
                    latency_s=0.01 if side == "live" else 0.02)


@pytest.mark.parametrize(("live", "copy", "reasons"), [
    ({"Y": np.array([1.0])}, {"Y": np.array([1.01])}, []),  # within 0.02
    ({"Y": np.array([1.0])}, {"Y": np.array([1.05])}, ["Y: max abs diff 0.05 > 0.02"]),
    ({"Y": np.array([1.0])}, {"Y": np.array([np.nan])}, ["Y: NaN where the active has none"]),
    ({"Y": np.array([np.inf])}, {"Y": np.array([1.0])}, ["Y: infinity differs"]),
    ({"N": np.array([3], dtype=np.int32)}, {"N": np.array([4], dtype=np.int32)},
     ["N: values differ (exact)"]),
    ({"W": np.array([b"a"], dtype=np.object_)}, {"W": np.array([b"a"], dtype=np.object_)}, []),
    ({"W": np.array([b"a"], dtype=np.object_)}, {"W": np.array([b"b"], dtype=np.object_)},
     ["W: values differ (exact)"]),
    ({"Y": np.array([1.0, 2.0])}, {"Y": np.array([1.0])}, ["Y: shape [1] vs [2]"]),
    ({"Y": np.array([1.0])}, {}, ["Y: missing output"]),
    ({}, {"Y": np.array([1.0])}, ["Y: extra output"]),
    # Class scores: the top-1 class decides, not the scores' distance.
    ({"P": np.array([[0.1, 0.9]])}, {"P": np.array([[0.3, 0.7]])}, []),
    ({"P": np.array([[0.1, 0.9]])}, {"P": np.array([[0.6, 0.4]])}, ["P: top-1 class differs"]),
])
def test_each_output_is_compared_by_its_rule(live, copy, reasons):
    settings = ParitySettings(outputs={"P": OutputTolerance(class_scores=True)})
    got, _ = differences(_exchange("live", **live), _exchange("copy", **copy), settings)
    assert got == reasons


def test_refusals_count_as_disagreement_unless_both_refuse_alike():
    settings = ParitySettings()
    ok, refused = _exchange("live", Y=np.array([1.0])), _exchange("copy")
    refused.error = "gRPC status 3: no"
    assert differences(ok, refused, settings)[0] == ["candidate refused: gRPC status 3: no"]
    live_refused = _exchange("live")
    live_refused.error = "gRPC status 3: no"
    assert differences(live_refused, _exchange("copy", Y=np.array([1.0])), settings)[0] == [
        "active refused (gRPC status 3: no); candidate answered"]
    assert differences(live_refused, refused, settings)[0] == []
    other = _exchange("copy")
    other.error = "gRPC status 13: boom"
    assert differences(live_refused, other, settings)[0] == [
        "both refused, differently: gRPC status 13: boom"]
    stats = ShadowStats()
    stats.record(ok, refused, settings)
    assert (stats.compared, stats.disagreed, stats.refused) == (1, 1, 1)
    assert stats.examples == [{"request": "d", "model": "m",
                               "why": "candidate refused: gRPC status 3: no"}]


def test_pairs_are_compared_once_and_what_cannot_be_compared_is_counted():
    pairer = Pairer(ParitySettings(), timeout_s=2.0)
    for i in range(EXAMPLES + 3):  # live first, then copy: disagreeing pairs
        live = _exchange("live", Y=np.array([1.0]))
        copy = _exchange("copy", Y=np.array([2.0]))
        live.request_id = copy.request_id = f"id{i}"
        pairer.add(live, 0.0)
        pairer.add(copy, 0.1)
    copy, live = _exchange("copy", Y=np.array([1.0])), _exchange("live", Y=np.array([1.0]))
    copy.request_id = live.request_id = "agree"
    pairer.add(copy, 0.0)  # the copy may come first
    pairer.add(live, 0.0)
    stats = pairer.stats
    assert (stats.compared, stats.disagreed) == (EXAMPLES + 4, EXAMPLES + 3)
    assert len(stats.examples) == EXAMPLES and stats.differing == {"Y": EXAMPLES + 3}
    assert stats.worst == {"Y": 1.0} and stats.latency_ratio == pytest.approx(2.0)
    # Truncated, unreadable, or two bodies under one id: counted, not compared.
    for attribute, counter in (("truncated", "truncated"), ("undecodable", "undecodable"),
                               ("request_digest", "mismatched_requests")):
        live, copy = _exchange("live"), _exchange("copy")
        live.request_id = copy.request_id = attribute
        setattr(copy, attribute, True if attribute == "truncated" else "other")
        pairer.add(live, 1.0)
        pairer.add(copy, 1.0)
        assert getattr(pairer.stats, counter) == 1
    assert pairer.stats.compared == EXAMPLES + 4
    # A live answer whose copy never comes: the candidate hung (counted as disagreeing,
    # after the timeout, not before); a copy without its live side is an orphan.
    hung, orphan = _exchange("live", Y=np.array([1.0])), _exchange("copy")
    hung.request_id, orphan.request_id = "hung", "orphan"
    pairer.add(hung, 10.0)
    pairer.add(orphan, 10.0)
    pairer.expire(11.9)
    assert pairer.stats.timed_out == 0
    pairer.expire(12.0)
    assert pairer.stats.timed_out == 1 and pairer.orphans == 1
    assert pairer.stats.examples[-1]["why"] != "" and pairer.stats.compared == EXAMPLES + 5
    pairer.reset()
    assert pairer.stats.compared == 0 and pairer.orphans == 0


def _metric(**fields) -> MetricSpec:  # type: ignore[no-untyped-def]
    return MetricSpec(name="d", source="shadow", **fields)


def test_shadow_gates_read_the_running_comparison():
    stats = ShadowStats(compared=200, disagreed=10)
    stats.live_latency_s, stats.copy_latency_s = [0.01] * 3, [0.03] * 3
    source = ShadowSource(lambda: stats)
    assert source.value(Query("disagreement_rate", ""), slot="green", window_s=3) == 0.05
    assert source.value(Query("shadow_latency_ratio", ""), slot="green", window_s=3) == \
        pytest.approx(3.0)
    assert source.value(Query("requests", ""), slot="green", window_s=3) == 200
    fixed = measure(source, _metric(builtin="disagreement_rate", max=0.01), candidate="green",
                    active="blue", window_s=3, min_requests=20, candidate_requests=200,
                    baselines={})
    assert fixed.phase is Phase.FAILED and fixed.message == "0.05 > max 0.01"
    few = measure(source, _metric(builtin="disagreement_rate", max=0.01), candidate="green",
                  active="blue", window_s=3, min_requests=500, candidate_requests=200,
                  baselines={})
    assert few.phase is Phase.INCONCLUSIVE
    sequential = measure(source, _metric(builtin="disagreement_rate", max=0.01,
                                         sequential=(0.01, 0.05)),
                         candidate="green", active="blue", window_s=3, min_requests=20,
                         candidate_requests=200, baselines={})
    assert sequential.phase is Phase.FAILED and sequential.message.startswith("SPRT: regression")
    clean = ShadowStats(compared=3000, disagreed=0)
    passed = measure(ShadowSource(lambda: clean), _metric(
        builtin="disagreement_rate", max=0.01, sequential=(0.01, 0.05)), candidate="green",
        active="blue", window_s=3, min_requests=20, candidate_requests=3000, baselines={})
    assert passed.phase is Phase.SUCCESSFUL
    # Nothing compared yet, or no shadow step running: never a pass.
    empty = measure(ShadowSource(lambda: ShadowStats()), _metric(
        builtin="disagreement_rate", max=0.01), candidate="green", active="blue", window_s=3,
        min_requests=0, candidate_requests=0, baselines={})
    assert empty.phase is Phase.INCONCLUSIVE
    none = measure(ShadowSource(lambda: None), _metric(builtin="disagreement_rate", max=0.01),
                   candidate="green", active="blue", window_s=3, min_requests=0,
                   candidate_requests=0, baselines={})
    assert none.phase is Phase.ERROR and "no shadow step is running" in none.message


def test_a_grpc_stream_decodes_to_its_responses_joined_or_its_error():
    def stream_trace(tokens: list[bytes], *, error: str = "") -> dict:
        request = service_pb2.ModelInferRequest(model_name="streamer")
        frames = []
        for token in tokens:
            response = service_pb2.ModelStreamInferResponse()
            out = response.infer_response.outputs.add(name="TOKEN", datatype="BYTES",
                                                      shape=[1])
            out.contents.bytes_contents.append(token)
            frames.append(response.SerializeToString())
        final = service_pb2.ModelStreamInferResponse()  # the empty final response
        final.infer_response.model_name = "streamer"
        frames.append(final.SerializeToString())
        if error:
            frames = [service_pb2.ModelStreamInferResponse(error_message=error)
                      .SerializeToString()]
        body = b"".join(struct.pack(">BI", 0, len(f)) + f for f in frames)
        return {"http_buffered_trace": {
            "request": {"headers": [
                {"key": ":path", "value": "/inference.GRPCInferenceService/ModelStreamInfer"},
                {"key": "content-type", "value": "application/grpc"},
                {"key": "x-request-id", "value": "s1"}],
                "body": {"as_bytes": _frame(request.SerializeToString())}},
            "response": {"headers": [{"key": "x-turnout-shadow", "value": "live"}],
                         "body": {"as_bytes": base64.b64encode(body).decode()},
                         "trailers": [{"key": "grpc-status", "value": "0"}]}}}

    answer = decode(stream_trace([b"ab", b"cd", b"ef"]))
    assert answer is not None and answer.model == "streamer" and answer.error is None
    assert answer.outputs["TOKEN"].tolist() == [b"ab", b"cd", b"ef"]
    other = decode(stream_trace([b"ab", b"cd"]))
    assert differences(answer, other, ParitySettings())[0] == ["TOKEN: shape [2] vs [3]"]
    refused = decode(stream_trace([], error="bad prompt"))
    assert refused.error == "stream error: bad prompt"  # type: ignore[union-attr]


def test_server_sent_events_decode_to_their_outputs_joined():
    def sse_trace(events: list[dict]) -> dict:
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        return {"http_buffered_trace": {
            "request": {"headers": [
                {"key": ":path", "value": "/v2/models/streamer/generate_stream"},
                {"key": "x-request-id", "value": "e1"}],
                "body": {"as_bytes": base64.b64encode(b"{}").decode()}},
            "response": {"headers": [{"key": ":status", "value": "200"},
                                     {"key": "x-turnout-shadow", "value": "copy"}],
                         "body": {"as_bytes": base64.b64encode(body).decode()}}}}

    answer = decode(sse_trace([{"TOKEN": "ab", "model_name": "streamer", "model_version": "1"},
                               {"TOKEN": "cd", "model_name": "streamer"}]))
    assert answer is not None and answer.model == "streamer"
    assert answer.outputs["TOKEN"].tolist() == [b"ab", b"cd"]
    numbers = decode(sse_trace([{"SCORE": [0.5, 1.5]}, {"SCORE": [2.5]}]))
    assert numbers.outputs["SCORE"].tolist() == [0.5, 1.5, 2.5]  # type: ignore[union-attr]
    failed = decode(sse_trace([{"TOKEN": "ab"}, {"error": "model crashed"}]))
    assert failed.error == "stream error: model crashed"  # type: ignore[union-attr]
