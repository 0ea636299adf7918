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
    # A snapshot is what a reader on another thread gets: later comparisons leave it be.
    frozen = pairer.stats.snapshot()
    late, copy = _exchange("live", Y=np.array([1.0])), _exchange("copy", Y=np.array([3.0]))
    late.request_id = copy.request_id = "late"
    pairer.add(late, 20.0)
    pairer.add(copy, 20.0)
    assert pairer.stats.compared == frozen.compared + 1
    assert frozen.compared == EXAMPLES + 5 and frozen.worst == {"Y": 1.0}
    assert len(frozen.live_latency_s) == len(pairer.stats.live_latency_s) - 1
    assert pairer.stats.worst == {"Y": 2.0} and frozen.differing["Y"] == EXAMPLES + 3
    assert pairer.stats.differing["Y"] == EXAMPLES + 4


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


@pytest.mark.parametrize(("live", "copy", "reasons"), [
    # Every output is looked at: a first one that differs does not hide the next.
    ({"A": np.array([1.0]), "B": np.array([2])}, {"B": np.array([3])},
     ["A: missing output", "B: values differ (exact)"]),
    ({"A": np.array([1.0, 2.0]), "B": np.array([2])},
     {"A": np.array([1.0]), "B": np.array([3])},
     ["A: shape [1] vs [2]", "B: values differ (exact)"]),
    ({"A": np.array([1]), "B": np.array([1.0])}, {"A": np.array([2]), "B": np.array([1.5])},
     ["A: values differ (exact)", "B: max abs diff 0.5 > 0.02"]),
    ({"P": np.array([0.1, 0.9]), "Q": np.array([1])},
     {"P": np.array([0.2, 0.8]), "Q": np.array([2])}, ["Q: values differ (exact)"]),
    # Class scores: one row as a vector, each row of a batch, NaN never the top class.
    ({"P": np.array([0.1, 0.9])}, {"P": np.array([0.6, 0.4])}, ["P: top-1 class differs"]),
    ({"P": np.array([[0.1, 0.9], [0.8, 0.2]])}, {"P": np.array([[0.1, 0.9], [0.3, 0.7]])},
     ["P: top-1 class differs"]),
    ({"P": np.array([[0.1, 0.9]])}, {"P": np.array([[np.nan, 0.2]])},
     ["P: NaN where the active has none"]),
    # Integers against floats of the same values: equal (exact rule).
    ({"N": np.array([1, 2])}, {"N": np.array([1.0, 2.0])}, []),
    ({"Y": np.array([1.0], dtype=np.float32)}, {"Y": np.array([1.0001], dtype=np.float64)},
     []),
])
def test_outputs_are_each_judged_and_class_scores_row_by_row(live, copy, reasons):
    settings = ParitySettings(outputs={"P": OutputTolerance(class_scores=True)})
    got, _ = differences(_exchange("live", **live), _exchange("copy", **copy), settings)
    assert got == reasons


def test_relative_tolerance_applies_when_the_absolute_one_holds():
    settings = ParitySettings(max_abs_diff=1.0, max_rel_diff=0.01)
    live, copy = _exchange("live", Y=np.array([10.0])), _exchange("copy", Y=np.array([10.5]))
    reasons, worst = differences(live, copy, settings)
    assert reasons == ["Y: max rel diff > 0.01"] and worst == {"Y": 0.5}
    assert differences(live, _exchange("copy", Y=np.array([10.05])), settings)[0] == []


def test_the_figures_count_each_case_and_keep_the_worst():
    settings = ParitySettings()
    stats = ShadowStats()
    for value in (1.5, 1.2, 1.0):  # worst abs diff stays the largest seen
        live, copy = _exchange("live", Y=np.array([1.0])), _exchange("copy", Y=np.array([value]))
        stats.record(live, copy, settings)
    assert stats.worst == {"Y": 0.5} and (stats.compared, stats.disagreed) == (3, 2)
    small = ShadowStats()
    small.record(_exchange("live", Y=np.array([1.0])), _exchange("copy", Y=np.array([1.01])),
                 settings)
    assert small.worst["Y"] == pytest.approx(0.01)  # not floored at any default
    for attribute, counter in (("truncated", "truncated"), ("undecodable", "undecodable"),
                               ("request_digest", "mismatched_requests")):
        for _ in range(2):
            live, copy = _exchange("live"), _exchange("copy")
            setattr(copy, attribute, True if attribute == "truncated" else "other")
            stats.record(live, copy, settings)
        assert getattr(stats, counter) == 2, counter
    refused = _exchange("copy")
    refused.error = "gRPC status 3: no"
    live_refused = _exchange("live")
    live_refused.error = "gRPC status 3: no"
    stats.record(_exchange("live", Y=np.array([1.0])), refused, settings)
    stats.record(_exchange("live", Y=np.array([1.0])), refused, settings)
    stats.record(live_refused, _exchange("copy", Y=np.array([1.0])), settings)
    assert stats.refused == 2  # the active's refusal is a disagreement, not a refusal
    # Latency pairs only when both sides were timed, and at most LATENCIES of them.
    untimed = ShadowStats()
    live, copy = _exchange("live", Y=np.array([1.0])), _exchange("copy", Y=np.array([1.0]))
    copy.latency_s = None
    untimed.record(live, copy, settings)
    live.latency_s, copy.latency_s = None, 0.02
    untimed.record(live, copy, settings)
    assert untimed.live_latency_s == [] and untimed.latency_ratio is None
    from gates.shadow import compare
    full = ShadowStats(live_latency_s=[0.01] * compare.LATENCIES,
                       copy_latency_s=[0.01] * compare.LATENCIES)
    full.record(_exchange("live", Y=np.array([1.0])), _exchange("copy", Y=np.array([1.0])),
                settings)
    assert len(full.live_latency_s) == compare.LATENCIES
    # Timeouts: counted each, with the live side's request in the example.
    hung = ShadowStats()
    for _ in range(2):
        hung.timeout(_exchange("live", Y=np.array([1.0])), 2.0)
    assert (hung.timed_out, hung.disagreed, hung.compared) == (2, 2, 2)
    assert hung.examples[0] == {"request": "d", "model": "m",
                                "why": "no answer from the candidate within 2 s"}
    long = ShadowStats()
    long._disagree(_exchange("live"), ["a" * 200, "b" * 200])
    assert long.examples[0]["why"] == ("a" * 200 + "; " + "b" * 200)[:300]


def test_the_figures_as_the_api_shows_them():
    stats = ShadowStats(compared=4, disagreed=1, refused=1, timed_out=0, truncated=2,
                        undecodable=3, mismatched_requests=5, worst={"Y": 0.5},
                        differing={"Y": 1}, examples=[{"request": "d", "model": "m",
                                                       "why": "Y"}],
                        live_latency_s=[0.01, 0.03], copy_latency_s=[0.04, 0.04])
    assert stats.as_dict() == {
        "compared": 4, "disagreed": 1, "disagreement_rate": 0.25, "refused": 1,
        "timed_out": 0, "truncated": 2, "undecodable": 3, "mismatched_requests": 5,
        "worst_abs_diff": {"Y": 0.5}, "differing": {"Y": 1},
        "examples": [{"request": "d", "model": "m", "why": "Y"}], "latency_ratio": 2.0}
    assert ShadowStats().as_dict()["disagreement_rate"] is None
    assert ShadowStats().as_dict()["latency_ratio"] is None
    zero = ShadowStats(live_latency_s=[0.0], copy_latency_s=[0.01])
    assert zero.latency_ratio is None


def test_pairs_expire_by_side_and_orphans_add_up():
    pairer = Pairer(ParitySettings(), timeout_s=1.0)
    for i in range(3):
        orphan = _exchange("copy")
        orphan.request_id = f"orphan{i}"
        pairer.add(orphan, 0.0)
    hung = _exchange("live", Y=np.array([1.0]))
    hung.request_id = "hung"
    pairer.add(hung, 0.0)
    pairer.expire(1.0)
    assert pairer.orphans == 3 and pairer.stats.timed_out == 1
    assert pairer.stats.examples[0]["request"] == "d"
    same = _exchange("live")
    same.request_id = "twice"
    pairer.add(same, 2.0)
    pairer.add(same, 2.5)  # the same side again: held, never compared with itself
    assert pairer.stats.compared == 1


def test_the_shadow_source_says_what_is_missing():
    from gates.metrics.provider import MetricsError, NoData

    empty = ShadowSource(lambda: ShadowStats())
    with pytest.raises(NoData, match=r"^no shadowed request compared yet$"):
        empty.value(Query("disagreement_rate", ""), slot="green", window_s=3)
    with pytest.raises(NoData, match=r"^no shadowed request timed on both slots yet$"):
        empty.value(Query("shadow_latency_ratio", ""), slot="green", window_s=3)
    with pytest.raises(MetricsError, match=r"^no shadow step is running \(shadow metrics are "
                                           r"measured in shadow steps only\)$"):
        ShadowSource(lambda: None).value(Query("disagreement_rate", ""), slot="g", window_s=3)
    for builtin, named in (("error_rate", "error_rate"), (None, "a PromQL query")):
        with pytest.raises(MetricsError) as info:
            empty.value(Query(builtin, "up"), slot="green", window_s=3)
        assert str(info.value) == (f"{named} is not available from the shadow source (it has "
                                   "disagreement_rate, shadow_latency_ratio)")
    arguments = {"candidate": "green", "active": "blue", "window_s": 3, "max_ratio": None,
                 "min_delta": 0, "alpha": 0.01, "beta": 0.05}
    with pytest.raises(MetricsError, match=r"^no sequential test for shadow_latency_ratio from "
                                           r"the shadow source$"):
        empty.sequential("shadow_latency_ratio", error_max=0.01, **arguments)
    with pytest.raises(NoData, match=r"^no shadowed request compared yet$"):
        empty.sequential("disagreement_rate", error_max=0.01, **arguments)
    # One compared request is evidence already; the gate's max is the alternative.
    one = ShadowSource(lambda: ShadowStats(compared=1, disagreed=1))
    result = one.sequential("disagreement_rate", error_max=0.2, **arguments)
    assert (result.bad, result.requests, result.p0, result.p1) == (1, 1, 0.001, 0.2)


def test_decoding_edge_cases_of_traces():
    # A header without a value, a body without bytes: empty, not an error.
    trace = _grpc_trace("live")
    trace["http_buffered_trace"]["request"]["headers"].append({"key": "X-Empty"})
    del trace["http_buffered_trace"]["response"]["headers"][0]  # no :status
    assert decode(trace).outputs["SCORE"].tolist() == [1.0]  # type: ignore[union-attr]
    bodiless = _grpc_trace("live")
    del bodiless["http_buffered_trace"]["response"]["body"]["as_bytes"]
    assert decode(bodiless).undecodable == "no gRPC message"  # type: ignore[union-attr]
    # A trailers-only refusal (the status in the headers) and an answer without trailers.
    trailers_only = _grpc_trace("copy", status="14", message="gone")
    response = trailers_only["http_buffered_trace"]["response"]
    response["headers"] += response.pop("trailers")
    assert decode(trailers_only).error == "gRPC status 14: gone"  # type: ignore[union-attr]
    untrailed = _grpc_trace("copy")
    del untrailed["http_buffered_trace"]["response"]["trailers"]
    assert decode(untrailed).error is None  # type: ignore[union-attr]
    # Timing needs both sides' times; digests are 16 hex digits of the request body.
    half = _grpc_trace("live")
    del half["http_buffered_trace"]["response"]["headers_received_time"]
    exchange = decode(half)
    assert exchange.latency_s is None and len(exchange.request_digest) == 16  # type: ignore
    # gRPC framing: a compressed message, a short second message, an empty message.
    compressed = _grpc_trace("live")
    compressed["http_buffered_trace"]["request"]["body"]["as_bytes"] = base64.b64encode(
        struct.pack(">BI", 1, 0)).decode()
    assert decode(compressed).undecodable == "compressed gRPC message"  # type: ignore
    short = _grpc_trace("live")
    body = base64.b64decode(short["http_buffered_trace"]["request"]["body"]["as_bytes"])
    short["http_buffered_trace"]["request"]["body"]["as_bytes"] = base64.b64encode(
        body + struct.pack(">BI", 0, 9) + b"abc").decode()
    assert decode(short).undecodable == "short gRPC message"  # type: ignore[union-attr]
    cut = _grpc_trace("live")
    cut["http_buffered_trace"]["request"]["body"]["as_bytes"] = base64.b64encode(
        body + b"\x00\x00").decode()
    assert decode(cut).undecodable == "short gRPC message"  # type: ignore[union-attr]
    empty = _grpc_trace("live")
    empty["http_buffered_trace"]["request"]["body"]["as_bytes"] = base64.b64encode(
        struct.pack(">BI", 0, 0)).decode()
    assert decode(empty).undecodable is None and decode(empty).model == ""  # type: ignore
    # Unreadable bodies keep at most 200 characters of why.
    garbage = _grpc_trace("live")
    garbage["http_buffered_trace"]["response"]["body"]["as_bytes"] = base64.b64encode(
        struct.pack(">BI", 0, 3) + b"\xff\xff\xff").decode()
    assert 0 < len(decode(garbage).undecodable or "") <= 200  # type: ignore[union-attr]


def test_http_paths_choose_the_decoder():
    def trace(path: str | None, body: bytes, status: str = "200") -> dict:
        headers = [{"key": "x-request-id", "value": "p1"}]
        if path is not None:
            headers.append({"key": ":path", "value": path})
        return {"http_buffered_trace": {
            "request": {"headers": headers, "body": {"as_bytes": ""}},
            "response": {"headers": [{"key": ":status", "value": status},
                                     {"key": "x-turnout-shadow", "value": "live"}],
                         "body": {"as_bytes": base64.b64encode(body).decode()}}}}

    generate = decode(trace("/v2/models/m/versions/2/generate", b'{"TOKEN": ["a", "b"]}'))
    assert generate.model == "m" and generate.outputs["TOKEN"].tolist() == [b"a", b"b"]  # type: ignore
    no_path = decode(trace(None, b'{"outputs": []}'))
    assert no_path.model == "" and no_path.outputs == {}  # type: ignore[union-attr]
    binary = trace("/v2/models/m/infer", b"\x01\x02")
    binary["http_buffered_trace"]["response"]["headers"].append(
        {"key": "Inference-Header-Content-Length", "value": "0"})
    assert decode(binary).outputs["<binary>"].tolist() == [1, 2]  # type: ignore[union-attr]
    matrix = decode(trace("/v2/models/m/infer", json.dumps({"outputs": [
        {"name": "M", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}).encode()))
    assert matrix.outputs["M"].dtype == np.int32 and matrix.outputs["M"].shape == (2, 2)  # type: ignore
    failed = decode(trace("/v2/models/m/infer", b"x" * 500, status="503"))
    assert failed.error == "HTTP 503: " + "x" * 200  # type: ignore[union-attr]
    streamed = decode(trace("/v2/models/m/generate_stream",
                            b'data: {"V": [[1, 2], [3, 4]]}\n\ndata: {"V": [5]}\n\n'))
    assert streamed.outputs["V"].tolist() == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
