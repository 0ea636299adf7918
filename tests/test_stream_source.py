"""The access-log metric source: per-slot windows (bounded memory, exact counts, quantiles
within a histogram bucket), Envoy's log entries read right (slot, outcome, latency), and
gates that keep deciding from it when Prometheus is down."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from gates.metrics.access_log import AccessLogReceiver, Observed, outcome
from gates.metrics.access_log import Verdict as V
from gates.metrics.evaluator import measure_round
from gates.metrics.measurement import Phase
from gates.metrics.provider import MetricsError, NoData
from gates.metrics.sources import EnvoyStreamSource, PromQLSource, Query
from gates.metrics.windows import BOUNDS_MS, SlotWindows
from turnout.policy import MetricSpec

NOW = 1_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fill(windows: SlotWindows, slot: str, latencies: list[float], *, at: float = NOW,
         errors: int = 0) -> None:
    for i, latency in enumerate(latencies):
        windows.record(slot, at=at, latency_ms=latency, error=i < errors)


def test_counts_and_errors_only_inside_the_window():
    clock = Clock()
    w = SlotWindows(clock=clock)
    fill(w, "green", [1.0] * 10, at=NOW - 5.0, errors=10)  # outside a 2 s window
    fill(w, "green", [1.0] * 20, at=NOW - 1.0, errors=3)
    fill(w, "green", [1.0] * 5, at=NOW)
    assert w.requests("green", 2.0) == 25
    assert w.errors("green", 2.0) == (3, 25)
    assert w.errors("green", 10.0) == (13, 35)
    assert w.requests("blue", 2.0) == 0
    clock.now += 200.0  # the horizon has passed: everything expired
    assert w.requests("green", 10.0) == 0


def test_a_reused_row_forgets_what_it_held():
    clock = Clock()
    w = SlotWindows(bucket_s=0.1, horizon_s=1.0, clock=clock)
    fill(w, "blue", [1.0] * 7, at=NOW)
    fill(w, "blue", [1.0] * 2, at=NOW + 1.0)  # same row, ten buckets later
    clock.now = NOW + 1.0
    assert w.requests("blue", 0.1) == 2 and w.requests("blue", 1.0) == 2


def test_quantiles_fall_in_the_right_bucket():
    w = SlotWindows(clock=Clock())
    fill(w, "blue", [1.0] * 98 + [50.0, 50.0])
    p50 = w.quantile("blue", 0.5, 1.0)
    p99 = w.quantile("blue", 0.99, 1.0)
    below = BOUNDS_MS[BOUNDS_MS < 1.0][-1]
    assert below < p50 <= 1.0 + 1e-9
    assert BOUNDS_MS[BOUNDS_MS < 50.0][-1] < p99 <= BOUNDS_MS[BOUNDS_MS >= 50.0][0]
    assert math.isnan(w.quantile("green", 0.5, 1.0))
    fill(w, "green", [10 ** 6])  # beyond the last bound
    assert w.quantile("green", 0.5, 1.0) == BOUNDS_MS[-1]


def test_memory_is_fixed_whatever_the_rate():
    w = SlotWindows(clock=Clock())
    fill(w, "blue", [1.0])
    before = w._rings["blue"].nbytes
    fill(w, "blue", [2.0] * 20_000)
    assert w._rings["blue"].nbytes == before
    assert w._rings["blue"].nbytes + w._stamps["blue"].nbytes == w.bytes_per_slot
    # six counts, three histograms (latency, TTFT, ITL) of len(BOUNDS_MS) + 1 buckets
    assert w.bytes_per_slot == 1200 * 8 * (6 + 3 * (len(BOUNDS_MS) + 1)) + 1200 * 8


def test_a_window_holds_exactly_its_buckets():
    """Requests k buckets (0.1 s) ago, k + 1 of them; a window of n buckets holds k < n."""
    w = SlotWindows(clock=Clock(NOW + 500.0))  # the clock is elsewhere: 'now' is given
    now = NOW + 0.05  # the middle of a bucket
    for k in range(5):
        fill(w, "green", [1.0] * (k + 1), at=now - k * 0.1, errors=1)
    assert w.requests("green", 0.1, now=now) == 1
    assert w.requests("green", 0.04, now=now) == 1  # less than a bucket: the current one
    assert w.requests("green", 0.3, now=now) == 1 + 2 + 3
    assert w.errors("green", 0.2, now=now) == (2, 3)
    assert w.errors("green", 0.5, now=now) == (5, 15)
    assert w.requests("green", 0.3, now=now - 0.1) == 2 + 3 + 4
    assert w.quantile("green", 0.5, 0.5, now=now) == pytest.approx(
        w.quantile("green", 0.5, 0.5, now=now - 0.01))
    assert not math.isnan(w.quantile("green", 0.5, 0.1, now=now))
    assert math.isnan(w.quantile("green", 0.5, 0.1, now=now + 5.0))
    assert w.exceeding("green", 0.5, 0.2, now=now) == (3, 3)
    assert w.exceeding("green", 0.5, 0.2, now=now + 5.0) == (0, 0)


def test_exceeding_counts_whole_buckets_above_the_threshold_bucket():
    w = SlotWindows(clock=Clock())
    fill(w, "blue", [0.5, 1.0, 1.2, 5.0])
    assert BOUNDS_MS[8] == pytest.approx(1.0) and BOUNDS_MS[9] > 1.2
    # 1.0 lies in the bucket ending at the bound 1.0; 1.2 and 5.0 in buckets above it.
    assert w.exceeding("blue", 1.0, 1.0) == (2, 4)
    # 1.1 lies in 1.2's bucket: only the buckets above it count.
    assert w.exceeding("blue", 1.1, 1.0) == (1, 4)
    assert w.exceeding("green", 1.0, 1.0) == (0, 0)


def test_quantiles_interpolate_inside_the_first_buckets():
    w = SlotWindows(clock=Clock())
    fill(w, "blue", [0.05] * 10 + [0.12] * 10)  # the first bucket (0, 0.1], then (0.1, b1]
    assert w.quantile("blue", 0.25, 1.0) == pytest.approx(0.05)
    assert w.quantile("blue", 0.5, 1.0) == pytest.approx(0.1)
    assert w.quantile("blue", 0.75, 1.0) == pytest.approx(0.1 + (BOUNDS_MS[1] - 0.1) * 0.5)
    fill(w, "green", [5.0] * 4)
    i = int((BOUNDS_MS < 5.0).sum())
    assert w.quantile("green", 0.5, 1.0) == pytest.approx(
        BOUNDS_MS[i - 1] + (BOUNDS_MS[i] - BOUNDS_MS[i - 1]) * 0.5)
    # q = 0: the lower bound of the first bucket holding a request.
    assert w.quantile("green", 0.0, 1.0) == pytest.approx(BOUNDS_MS[i - 1])
    assert w.quantile("blue", 0.0, 1.0) == 0.0
    assert w.quantile("green", 1.0, 1.0) == pytest.approx(BOUNDS_MS[i])


INFER = "/inference.GRPCInferenceService/ModelInfer"


def entry(cluster: str, *, code: int | None = 200, grpc: str | None = None,
          trailers_only: bool = False, ms: float = 4.0, path: str | None = None
          ) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.upstream_cluster = cluster
    e.request.path = path if path is not None else (
        "/v2/models/any/infer" if "_http" in cluster else INFER)
    e.common_properties.start_time.FromSeconds(int(NOW))
    e.common_properties.duration.FromNanoseconds(int(ms * 1e6))
    if code is not None:
        e.response.response_code.value = code
    if grpc is not None:
        target = e.response.response_headers if trailers_only else e.response.response_trailers
        target["grpc-status"] = grpc
    return e


@pytest.mark.parametrize("e, expected", [
    (entry("slot_green", grpc="0"), ("green", V.OK)),
    (entry("slot_green_ha", grpc="0"), ("green", V.OK)),
    (entry("slot_blue_http"), ("blue", V.OK)),
    (entry("slot_blue_http_ha", code=503), ("blue", V.FAILED)),
    (entry("slot_green", grpc="13"), ("green", V.FAILED)),
    (entry("slot_green", grpc="14", trailers_only=True), ("green", V.FAILED)),
    (entry("slot_green", code=None), ("green", V.FAILED)),  # no response at all
    (entry("slot_green_preview", grpc="13"), None),  # pinned: not traffic
    (entry("turnout_xds"), None),
    (entry(""), None),
])
def test_log_entries_map_to_slot_and_outcome(e, expected):
    seen = outcome(e)
    if expected is None:
        assert seen is None
        return
    assert (seen.slot, seen.verdict) == expected
    assert seen.latency_ms == pytest.approx(4.0) and seen.at == pytest.approx(NOW + 0.004)


# The KServe v2 protocol's inference calls (kserve's open inference protocol, gRPC service
# inference.GRPCInferenceService; HTTP /v2/models/{name}[/versions/{v}]/infer; Triton's
# generate extension) count; metadata, health and repository calls do not.
@pytest.mark.parametrize("path, counted", [
    ("/inference.GRPCInferenceService/ModelInfer", True),
    ("/inference.GRPCInferenceService/ModelStreamInfer", True),
    ("/inference.GRPCInferenceService/ModelMetadata", False),
    ("/inference.GRPCInferenceService/ModelReady", False),
    ("/inference.GRPCInferenceService/ServerLive", False),
    ("/inference.GRPCInferenceService/ModelInferX", False),
    ("/inference.GRPCInferenceService/ModelConfig", False),
    ("/inference.GRPCInferenceService/RepositoryModelLoad", False),
    ("/v2/models/m/infer", True),
    ("/v2/models/m/versions/3/infer", True),
    ("/v2/models/m/generate", True),
    ("/v2/models/m/generate_stream", True),
    ("/v2/models/m/infer?x=1", True),
    ("/v2/models/m", False),
    ("/v2/models/m/ready", False),
    ("/v2/models/m/config", False),
    ("/v2/models/m/infer/x", False),
    ("/v2/models//infer", False),
    ("/v2/health/ready", False),
    ("/v2/repository/models/m/load", False),
    ("/v2/models/m/inferx", False),
    ("", False),
])
def test_only_inference_calls_count(path, counted):
    assert (outcome(entry("slot_green", path=path)) is not None) is counted
    assert (outcome(entry("slot_blue_http", path=path)) is not None) is counted


# gRPC status codes (grpc/doc/statuscodes.md): those a client causes, by number.
@pytest.mark.parametrize("status, expected", [
    ("0", V.OK), ("1", V.CLIENT), ("2", V.FAILED), ("3", V.CLIENT), ("4", V.FAILED),
    ("5", V.CLIENT), ("6", V.CLIENT), ("7", V.CLIENT), ("8", V.FAILED), ("9", V.CLIENT),
    ("10", V.FAILED), ("11", V.CLIENT), ("12", V.FAILED), ("13", V.FAILED),
    ("14", V.FAILED), ("15", V.FAILED), ("16", V.CLIENT), ("99", V.FAILED),
])
def test_grpc_statuses_a_client_causes_are_apart(status, expected):
    assert outcome(entry("slot_green", grpc=status)).verdict is expected
    assert outcome(entry("slot_green", grpc=status, trailers_only=True)).verdict is expected


def test_receiver_records_a_batch():
    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w)
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend([entry("slot_green", grpc="0"),
                                        entry("slot_green", grpc="2"),
                                        entry("slot_blue_preview")])
    assert receiver.record(message) == 2 and receiver.received == 2
    assert w.errors("green", 1.0) == (1, 2)


def test_stream_source_answers_its_builtins_and_refuses_others():
    w = SlotWindows(clock=Clock())
    source = EnvoyStreamSource(w)
    fill(w, "green", [2.0] * 8, errors=2)
    assert source.value(Query("requests", ""), slot="green", window_s=1) == 8
    assert source.value(Query("requests_rps", ""), slot="green", window_s=2) == 4
    assert source.value(Query("error_rate", ""), slot="green", window_s=1) == 0.25
    assert source.value(Query("p50_latency_ms", ""), slot="green", window_s=1) == \
        pytest.approx(w.quantile("green", 0.5, 1))
    with pytest.raises(NoData):
        source.value(Query("error_rate", ""), slot="blue", window_s=1)
    with pytest.raises(NoData):
        source.value(Query("p99_latency_ms", ""), slot="blue", window_s=1)
    with pytest.raises(MetricsError, match="not available from the envoy source"):
        source.value(Query("cpu_utilization", "x"), slot="green", window_s=1)


class Down:
    def query_value(self, promql: str) -> float:
        raise MetricsError("connection refused")


def test_gates_on_the_stream_keep_deciding_when_prometheus_is_down():
    clock = Clock()
    w = SlotWindows(clock=clock)
    fill(w, "blue", [1.0] * 100)
    fill(w, "green", [40.0] * 20)
    metrics = [MetricSpec("p50", builtin="p50_latency_ms", max_ratio=3, min_delta=10,
                          source="envoy"),
               MetricSpec("errors", builtin="error_rate", max=0.01, source="envoy"),
               MetricSpec("p99-prom", builtin="p99_latency_ms", max_ratio=2)]
    gate_round = measure_round(Down(), metrics, candidate="green", active="blue",
                               window_s=1, min_requests=5, baselines={},
                               stream=EnvoyStreamSource(w))
    phases = {m.metric: m.phase for m in gate_round.measurements}
    assert phases == {"p50": Phase.FAILED, "errors": Phase.SUCCESSFUL, "p99-prom": Phase.ERROR}
    assert gate_round.phase is Phase.FAILED
    without = measure_round(Down(), metrics[:1], candidate="green", active="blue",
                            window_s=1, min_requests=5, baselines={})
    assert without.measurements[0].phase is Phase.ERROR
    assert "no envoy access-log source" in without.measurements[0].message


class Recording:
    """A MetricSource answering per (builtin, slot) with a number, or raising the
    exception given as the answer; records every question."""

    def __init__(self, answers: dict[tuple[str | None, str], float | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str | None, str, float, str]] = []

    def value(self, query, *, slot: str, window_s: float, model: str = "") -> float:
        self.asked.append((query.builtin, slot, window_s, model))
        answer = self.answers.get((query.builtin, slot))
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            raise NoData("nothing")
        return answer


def test_each_metric_reads_its_own_source_with_its_own_request_count():
    prom = Recording({("requests", "green"): 3.0, ("error_rate", "green"): 0.0})
    stream = Recording({("requests", "green"): 50.0, ("error_rate", "green"): 0.0})
    metrics = [MetricSpec("prom-errors", builtin="error_rate", max=0.01),
               MetricSpec("stream-errors", builtin="error_rate", max=0.01, source="envoy")]
    before = time.time()
    got = measure_round(prom, metrics, candidate="green", active="blue", window_s=6,
                        min_requests=10, baselines={}, model="ranker", stream=stream)
    assert before <= got.at <= time.time()
    by_name = {m.metric: m for m in got.measurements}
    # Prometheus saw 3 requests (< 10: inconclusive); the stream saw 50 (decides).
    assert by_name["prom-errors"].phase is Phase.INCONCLUSIVE
    assert by_name["prom-errors"].requests == 3.0
    assert by_name["stream-errors"].phase is Phase.SUCCESSFUL
    assert by_name["stream-errors"].requests == 50.0
    # The model narrows every question; each source is asked for its count once.
    assert all(model == "ranker" and window == 6 for _, _, window, model in prom.asked)
    assert [b for b, *_ in prom.asked].count("requests") == 1
    assert [b for b, *_ in stream.asked].count("requests") == 1


@pytest.mark.parametrize("count", [math.inf, math.nan])
def test_a_request_count_that_is_not_a_number_is_zero(count):
    source = Recording({("requests", "green"): count, ("error_rate", "green"): 0.0})
    got = measure_round(source, [MetricSpec("e", builtin="error_rate", max=0.01)],
                        candidate="green", active="blue", window_s=6, min_requests=1,
                        baselines={})
    assert got.measurements[0].requests == 0.0
    assert got.measurements[0].phase is Phase.INCONCLUSIVE


def test_a_missing_source_is_named():
    metrics = [MetricSpec("prom", builtin="error_rate", max=0.01),
               MetricSpec("stream", builtin="error_rate", max=0.01, source="envoy")]
    got = measure_round(None, metrics, candidate="green", active="blue", window_s=6,
                        min_requests=1, baselines={})
    messages = {m.metric: (m.phase, m.message, m.threshold) for m in got.measurements}
    assert messages == {
        "prom": (Phase.ERROR, "no metrics provider source configured", "<=0.01"),
        "stream": (Phase.ERROR, "no envoy access-log source configured", "<=0.01")}


def test_latency_and_completion_time_come_from_the_entry_to_the_nanosecond():
    e = entry("slot_blue")
    e.common_properties.start_time.seconds, e.common_properties.start_time.nanos = 5, 250_000_000
    e.common_properties.duration.seconds, e.common_properties.duration.nanos = 1, 500_000_000
    assert outcome(e) == Observed("blue", 6.75, 1500.0, V.OK)
    # Without a duration, the time to the last byte sent downstream is the latency.
    e.common_properties.ClearField("duration")
    e.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(2)
    assert outcome(e) == Observed("blue", 5.252, 2.0, V.OK)


@pytest.mark.parametrize(("code", "expected"), [
    (200, V.OK), (399, V.OK), (400, V.CLIENT), (404, V.CLIENT), (428, V.CLIENT),
    (429, V.FAILED), (430, V.CLIENT), (499, V.CLIENT), (500, V.FAILED), (501, V.FAILED),
    (503, V.FAILED)])
def test_any_5xx_or_429_is_a_failure_and_other_4xx_the_clients(code, expected):
    assert outcome(entry("slot_green_http", code=code)).verdict is expected


def test_receiver_counts_every_slot_of_a_batch_and_keeps_counting():
    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w)
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend([entry("slot_green", grpc="0"),
                                        entry("slot_blue_http", code=503),
                                        entry("slot_green", grpc="2", ms=30.0)])
    assert receiver.record(message) == 3
    assert receiver.record(message) == 3
    assert receiver.received == 6
    assert w.errors("green", 1.0) == (2, 4) and w.errors("blue", 1.0) == (2, 2)
    assert w.exceeding("green", 10.0, 1.0) == (2, 4)


def test_receiver_serves_envoys_access_log_stream(caplog):
    """A real gRPC stream: the node named in the first message is logged, every message of
    the stream is recorded, and the stream gets its (empty) answer."""
    import logging

    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w)
    first = _named("sidecar-7", als_pb2.StreamAccessLogsMessage())
    first.http_logs.log_entry.append(entry("slot_green", grpc="0"))
    second = als_pb2.StreamAccessLogsMessage()
    second.http_logs.log_entry.extend([entry("slot_green", grpc="14"), entry("slot_blue")])
    with caplog.at_level(logging.INFO, logger="turnout.gates.access_log"):
        answer = _serve(receiver, [first, second])
    assert w.errors("green", 1.0) == (1, 2) and w.requests("blue", 1.0) == 1
    assert receiver.received == 3
    assert isinstance(answer, als_pb2.StreamAccessLogsResponse)
    assert "access-log stream from sidecar-7" in caplog.messages


def test_stream_source_answers_exactly_and_names_what_it_lacks():
    w = SlotWindows(clock=Clock())
    fill(w, "green", [1.0] * 90 + [300.0] * 10)
    source = EnvoyStreamSource(w)
    assert source.value(Query("p99_latency_ms", ""), slot="green", window_s=1) == \
        w.quantile("green", 0.99, 1)
    assert source.value(Query("p50_latency_ms", ""), slot="green", window_s=1) == \
        w.quantile("green", 0.5, 1)
    for builtin in ("error_rate", "p50_latency_ms"):
        with pytest.raises(NoData, match=r"^no requests to blue in the last 2\.5s$"):
            source.value(Query(builtin, ""), slot="blue", window_s=2.5)
    with pytest.raises(MetricsError) as raised:
        source.value(Query(None, "up"), slot="green", window_s=1)
    assert str(raised.value) == (
        "a PromQL query is not available from the envoy source (it has requests_rps, "
        "error_rate, p50_latency_ms, p99_latency_ms, ttft_p50_ms, ttft_p99_ms, itl_p99_ms, "
        "tokens_per_s, stream_error_rate)")
    with pytest.raises(MetricsError, match=r"^gpu_utilization is not available from the "):
        source.value(Query("gpu_utilization", "x"), slot="green", window_s=1)


def test_streams_give_ttft_itl_tokens_and_their_own_error_rate():
    """Decoupled models' streams: each its responses and time to first response; ITL is
    (duration - TTFT) / (responses - 1) per stream. Unary requests are in none of these."""
    clock = Clock()
    w = SlotWindows(clock=clock)
    now = clock() - 0.05
    # 9 good streams: TTFT 20 ms, 11 responses over 120 ms (ITL 10 ms); one failing stream
    # with TTFT 400 ms and 1 response; one unary request (responses 0); one stream whose
    # TTFT is unknown (an SSE stream: counted, not ranked).
    w.record_many("green", at=np.full(12, now),
                  latency_ms=np.array([120.0] * 9 + [500.0, 5.0, 50.0]),
                  error=np.array([False] * 9 + [True, False, False]),
                  responses=np.array([11] * 9 + [1, 0, 1]),
                  ttft_ms=np.array([20.0] * 9 + [400.0, np.nan, np.nan]))
    source = EnvoyStreamSource(w)

    def value(name: str) -> float:
        return source.value(Query(name, ""), slot="green", window_s=2)
    assert w.streams("green", 2) == (1, 11, 9 * 11 + 1 + 1)
    assert value("stream_error_rate") == pytest.approx(1 / 11)
    assert value("tokens_per_s") == pytest.approx(101 / 2)
    assert 18 < value("ttft_p50_ms") <= 21.2 and value("ttft_p99_ms") > 300
    assert 9 < value("itl_p99_ms") <= 10.7  # only the 9 streams with 2+ responses
    assert value("error_rate") == pytest.approx(1 / 12)  # every request, streams included
    for name in ("ttft_p99_ms", "itl_p99_ms", "tokens_per_s", "stream_error_rate"):
        with pytest.raises(NoData, match=r"^no streams to blue in the last 2s$"):
            source.value(Query(name, ""), slot="blue", window_s=2)
    w.record_many("blue", at=np.array([now]), latency_ms=np.array([5.0]),
                  error=np.array([False]))  # unary only: still no streams
    with pytest.raises(NoData, match="no streams to blue"):
        source.value(Query("ttft_p50_ms", ""), slot="blue", window_s=2)


def test_a_promql_source_renders_for_every_model_unless_told_one():
    asked: list[str] = []

    class Provider:
        def query_value(self, promql: str) -> float:
            asked.append(promql)
            return 0.5

    source = PromQLSource(Provider())
    assert source.value(Query(None, 'x{slot="$slot",model=~"$model"}[$window]'),
                        slot="blue", window_s=6) == 0.5
    source.value(Query(None, 'x{model=~"$model"}'), slot="blue", window_s=6, model="m.1")
    assert asked == ['x{slot="blue",model=~".+"}[6s]', r'x{model=~"m\\.1"}']


# ---- issue 28: entries that cannot steer the gates -------------------------------------
def test_an_older_bucket_never_resets_the_row_of_a_newer_one():
    """20 entries stamped 120 s in the past land on the row of the current bucket (the ring
    is 120 s long): they are dropped and counted, the current row's failures stay."""
    import numpy as np

    w = SlotWindows(clock=Clock())
    fill(w, "green", [1.0] * 950, errors=950)
    dropped = w.record_many("green", at=np.full(20, NOW - 120.0), latency_ms=np.ones(20),
                            error=np.zeros(20, bool))
    assert dropped == 20
    assert w.errors("green", 1.0) == (950, 950)
    # The same bucket again is taken; a newer one takes the row over.
    assert w.record("green", at=NOW, latency_ms=1.0, error=False) == 0
    assert w.errors("green", 1.0) == (950, 951)
    assert w.record("green", at=NOW + 120.0, latency_ms=1.0, error=False) == 0
    assert w.errors("green", 1.0, now=NOW + 120.0) == (0, 1)


def test_client_errors_are_counted_apart_from_requests_errors_and_latency():
    import numpy as np

    w = SlotWindows(clock=Clock())
    w.record_many("blue", at=np.full(4, NOW), latency_ms=np.array([1.0, 1.0, 0.1, 0.1]),
                  error=np.array([False, True, False, False]),
                  client=np.array([False, False, True, True]))
    assert w.errors("blue", 1.0) == (1, 2)
    assert w.client_errors("blue", 1.0) == 2 and w.client_errors("green", 1.0) == 0
    assert w.quantile("blue", 0.0, 1.0) > 0.5, "client errors pulled the latency down"


def _batch(*ats: float, status: str = "13", cluster: str = "slot_green"
           ) -> als_pb2.StreamAccessLogsMessage:
    message = als_pb2.StreamAccessLogsMessage()
    for at in ats:
        e = entry(cluster, grpc=status, ms=0.0)
        e.common_properties.start_time.FromNanoseconds(int(at * 1e9))
        message.http_logs.log_entry.append(e)
    return message


def test_entries_outside_the_accepted_time_are_refused_and_counted():
    w = SlotWindows(clock=Clock())
    refused: list[tuple[str, int]] = []
    receiver = AccessLogReceiver(w, max_age_s=10.0, max_skew_s=2.0,
                                 on_refused=lambda reason, n: refused.append((reason, n)))
    counted = receiver.record(_batch(NOW - 10.0, NOW - 10.001, NOW - 120.0, NOW + 2.0,
                                     NOW + 2.001, NOW + 3600.0, NOW))
    assert counted == 3 and receiver.received == 3
    assert refused == [("stale", 2), ("future", 2)]
    assert receiver.refused == {"stale": 2, "future": 2}
    assert w.errors("green", 11.0, now=NOW) == (2, 2)


def test_defaults_of_the_receiver():
    # docs/policy.md, "What the envoy source counts": 10 s old to 2 s ahead, 20,000
    # entries/s per node, 2,000 entries per message, 4 MB/s per node.
    receiver = AccessLogReceiver(SlotWindows())
    assert (receiver.max_age_s, receiver.max_skew_s, receiver.budget.per_s,
            receiver.max_batch, receiver.byte_budget.per_s) == \
        (10.0, 2.0, 20_000.0, 2_000, 4_000_000.0)


def test_a_budget_refills_at_its_rate_up_to_two_seconds_worth():
    from gates.metrics.access_log import Budget

    clock = Clock(0.0)
    assert not Budget(100.0, clock=clock).take("a", 201), "a new node starts with 2 s worth"
    budget = Budget(100.0, clock=clock)
    assert budget.take("a", 200) and not budget.take("a", 1)
    assert budget.take("b", 150), "budgets are per node"
    clock.now = 0.5
    assert budget.take("a", 50) and not budget.take("a", 1)
    clock.now = 100.0
    assert not budget.take("a", 201) and budget.take("a", 200)


def _serve(receiver: AccessLogReceiver, messages: list,  # type: ignore[type-arg]
           serializer=als_pb2.StreamAccessLogsMessage.SerializeToString) -> object:  # type: ignore[no-untyped-def]
    """Send ``messages`` on one real gRPC stream; the answer, or (status code, details)."""
    import asyncio

    import grpc

    async def main() -> object:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((receiver.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.stream_unary(
                    "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
                    request_serializer=serializer,
                    response_deserializer=als_pb2.StreamAccessLogsResponse.FromString)
                try:
                    return await call(iter(messages), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details()
        finally:
            await server.stop(None)

    return asyncio.run(main())


def _named(node: str, message: als_pb2.StreamAccessLogsMessage):  # type: ignore[no-untyped-def]
    message.identifier.node.id = node
    return message


def test_a_stream_is_admitted_by_the_node_it_names_and_refused_otherwise(caplog):
    import logging

    import grpc

    w = SlotWindows(clock=Clock(NOW + 0.05))
    asked: list[tuple[str, str]] = []

    def admit(node: str, context) -> str | None:  # type: ignore[no-untyped-def]
        asked.append((node, context.peer().split(":")[0]))
        return None if node == "envoy-0" else "not one of ours"

    receiver = AccessLogReceiver(w, admit=admit)
    with caplog.at_level(logging.WARNING, logger="turnout.gates.access_log"):
        assert _serve(receiver, [_named("envoy-9\n[fake] line", _batch(NOW)),
                                 _batch(NOW)]) == (grpc.StatusCode.PERMISSION_DENIED,
                                                   "not one of ours")
    assert w.requests("green", 1.0) == 0 and receiver.refused == {"identity": 1}
    assert caplog.messages[-1].startswith("refused access-log stream from ipv4:127.0.0.1:")
    assert caplog.messages[-1].endswith(
        " claiming node envoy-9\\n[fake] line: not one of ours")
    assert _serve(receiver, [_batch(NOW)]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "the first message must name the node (identifier.node.id)"), "a stream naming no node"
    assert receiver.refused == {"identity": 2}
    assert isinstance(_serve(receiver, [_named("envoy-0", _batch(NOW)), _batch(NOW, NOW)]),
                      als_pb2.StreamAccessLogsResponse)
    assert w.errors("green", 1.0) == (3, 3)
    assert asked == [("envoy-9\n[fake] line", "ipv4"), ("envoy-0", "ipv4")]


def test_a_node_that_drops_its_ads_stream_is_cut_off_mid_stream():
    import grpc

    w = SlotWindows(clock=Clock(NOW + 0.05))
    holding = iter([True, False])  # asked from the second message on
    asked: list[str] = []

    def holds(node: str) -> bool:
        asked.append(node)
        return next(holding)

    receiver = AccessLogReceiver(w, admit=lambda node, ctx: None, holds=holds)
    assert _serve(receiver, [_named("envoy-0", _batch(NOW)), _batch(NOW), _batch(NOW, NOW)]) \
        == (grpc.StatusCode.PERMISSION_DENIED, "node envoy-0 no longer holds an ADS stream")
    assert asked == ["envoy-0", "envoy-0"]
    assert w.requests("green", 1.0) == 2 and receiver.refused == {"identity": 2}


def test_over_budget_and_oversized_batches_are_refused_and_the_stream_goes_on():
    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w, budget_per_s=2.0, max_batch=3)
    answer = _serve(receiver, [_named("envoy-0", _batch(NOW, NOW)),
                               _batch(NOW, NOW, NOW, NOW),  # over the batch limit
                               _batch(NOW, NOW, NOW),       # over what is left of 4
                               _batch(NOW, NOW)])
    assert isinstance(answer, als_pb2.StreamAccessLogsResponse)
    assert receiver.refused == {"batch": 4, "rate": 3}
    assert w.requests("green", 1.0) == 4
    assert list(receiver.budget._nodes) == ["envoy-0"], "budgets are kept per node"


def test_printable_escapes_and_truncates():
    from gates.metrics.access_log import printable

    assert printable("envoy-0") == "envoy-0"
    assert printable("a\nb\x1b") == "a\\nb\\x1b"
    assert printable("x" * 100) == "x" * 80 + "..."
    assert printable("x" * 80) == "x" * 80


def test_entries_that_are_not_split_inference_are_ignored_and_counted_apart():
    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w)
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend([
        entry("slot_green_preview"), entry(""), entry("slot_green", path="/v2/health/ready"),
        entry("slot_green")])
    assert receiver.record(message) == 1
    assert receiver.ignored == {"not split traffic": 2, "not inference": 1}
    assert receiver.refused == {}


def test_client_errors_go_through_the_receiver_apart_and_are_counted_as_received():
    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w)
    assert receiver.record(_batch(NOW, NOW, status="5")) == 2  # NOT_FOUND: the client's
    assert receiver.record(_batch(NOW, status="13")) == 1
    assert w.client_errors("green", 1.0) == 2
    assert w.errors("green", 1.0) == (1, 1)
    assert receiver.received == 3


def test_entries_dropped_by_a_newer_row_are_refused_as_stale_and_not_counted():
    w = SlotWindows(clock=Clock(NOW + 0.05))
    receiver = AccessLogReceiver(w, max_age_s=200.0)
    w.record("green", at=NOW, latency_ms=1.0, error=False)  # the row now holds NOW's bucket
    assert receiver.record(_batch(NOW - 120.0, NOW - 120.0, NOW)) == 1
    assert receiver.refused == {"stale": 2} and receiver.received == 1
    assert w.requests("green", 1.0) == 2


def test_a_stream_entry_gives_its_responses_and_time_to_first_byte():
    from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2

    from gates.metrics.access_log import GRPC_STATS, classify

    def stream(path: str, *, counted: int | None, first_ms: float | None
               ) -> accesslog_pb2.HTTPAccessLogEntry:
        e = entry("slot_green", grpc="0", ms=120.0, path=path)
        if first_ms is not None:
            e.common_properties.time_to_first_upstream_rx_byte.FromNanoseconds(
                int(first_ms * 1e6))
        if counted is not None:
            e.common_properties.filter_state_objects[GRPC_STATS].Pack(
                grpc_stats_pb2.FilterObject(request_message_count=1,
                                            response_message_count=counted))
        return e
    grpc_stream = "/inference.GRPCInferenceService/ModelStreamInfer"
    seen = classify(stream(grpc_stream, counted=11, first_ms=20.0))
    assert (seen.responses, seen.ttft_ms) == (11, pytest.approx(20.0))
    seen = classify(stream(grpc_stream, counted=0, first_ms=None))  # ended before a byte
    assert seen.responses == 1 and math.isnan(seen.ttft_ms)
    seen = classify(stream("/v2/models/m/generate_stream", counted=None, first_ms=15.0))
    assert (seen.responses, seen.ttft_ms) == (1, pytest.approx(15.0))  # SSE: count unknown
    unary = classify(stream(INFER, counted=1, first_ms=3.0))
    assert unary.responses == 0 and math.isnan(unary.ttft_ms)  # not a stream
    w = SlotWindows(clock=Clock(NOW + 0.2))  # the stream ended 120 ms after it started
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend([stream(grpc_stream, counted=11, first_ms=20.0),
                                        entry("slot_green", grpc="0")])
    assert AccessLogReceiver(w).record(message) == 2
    assert w.streams("green", 1.0) == (0, 1, 11) and w.requests("green", 1.0) == 2
    assert 18 < w.quantile("green", 0.5, 1.0, of="ttft") <= 21.2


def test_a_node_over_its_byte_budget_is_refused_unread_and_read_at_the_budgets_pace():
    """docs/policy.md: over 4 MB/s per node (here 2 KB/s) a message is refused unread,
    counted as one under ``bytes``, and the stream is read no faster than the budget."""
    import time

    w = SlotWindows(clock=Clock(NOW + 0.05))
    first = _named("envoy-0", _batch(NOW))
    size = _batch(NOW).ByteSize()
    receiver = AccessLogReceiver(w, bytes_per_s=size * 1.5)  # 3 such messages in 2 s
    started = time.monotonic()
    answer = _serve(receiver, [first] + [_batch(NOW) for _ in range(5)])
    took = time.monotonic() - started
    assert isinstance(answer, als_pb2.StreamAccessLogsResponse)
    # The first message names the node (read whatever its size); of the next five, three
    # fit the budget's two seconds and at least one does not.
    refused = receiver.refused["bytes"]
    assert set(receiver.refused) == {"bytes"} and 1 <= refused <= 2, receiver.refused
    assert w.requests("green", 1.0) == 1 + 5 - refused
    assert took >= refused / 1.5 * 0.9, (took, refused)  # each refusal waited its share
    # The budget is the node's: another node's stream is read in full meanwhile.
    assert isinstance(_serve(receiver, [_named("envoy-1", _batch(NOW)), _batch(NOW),
                                        _batch(NOW)]), als_pb2.StreamAccessLogsResponse)
    assert receiver.refused["bytes"] == refused


def test_a_message_that_does_not_parse_ends_the_stream():
    import grpc

    receiver = AccessLogReceiver(SlotWindows(clock=Clock(NOW)))
    assert _serve(receiver, [b"\xff\xff\xff"], serializer=None) == (  # not a message at all
        grpc.StatusCode.INVALID_ARGUMENT, "not a StreamAccessLogsMessage")
    assert receiver.refused == {"identity": 1}
    named = _named("envoy-0", _batch(NOW)).SerializeToString()
    assert _serve(receiver, [named, b"\xff\xff\xff"], serializer=None) == (
        grpc.StatusCode.INVALID_ARGUMENT, "not a StreamAccessLogsMessage")
    assert receiver.refused == {"identity": 1, "batch": 1}  # later: a bad batch
