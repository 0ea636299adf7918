"""The access-log metric source: per-slot windows (bounded memory, exact counts, quantiles
within a histogram bucket), Envoy's log entries read right (slot, outcome, latency), and
gates that keep deciding from it when Prometheus is down."""

from __future__ import annotations

import math
import time

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from gates.metrics.access_log import AccessLogReceiver, outcome
from gates.metrics.evaluator import measure_round
from gates.metrics.measurement import Phase
from gates.metrics.provider import MetricsError, NoData
from gates.metrics.sources import EnvoyStreamSource, Query
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
    assert w.bytes_per_slot == 1200 * 8 * (2 + len(BOUNDS_MS) + 1) + 1200 * 8


def entry(cluster: str, *, code: int | None = 200, grpc: str | None = None,
          trailers_only: bool = False, ms: float = 4.0) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.upstream_cluster = cluster
    e.common_properties.start_time.FromSeconds(int(NOW))
    e.common_properties.duration.FromNanoseconds(int(ms * 1e6))
    if code is not None:
        e.response.response_code.value = code
    if grpc is not None:
        target = e.response.response_headers if trailers_only else e.response.response_trailers
        target["grpc-status"] = grpc
    return e


@pytest.mark.parametrize("e, expected", [
    (entry("slot_green", grpc="0"), ("green", False)),
    (entry("slot_green_ha", grpc="0"), ("green", False)),
    (entry("slot_blue_http"), ("blue", False)),
    (entry("slot_blue_http_ha", code=503), ("blue", True)),
    (entry("slot_green", grpc="13"), ("green", True)),
    (entry("slot_green", grpc="14", trailers_only=True), ("green", True)),
    (entry("slot_green", code=None), ("green", True)),  # no response at all
    (entry("slot_green_preview", grpc="13"), None),  # pinned: not traffic
    (entry("turnout_xds"), None),
    (entry(""), None),
])
def test_log_entries_map_to_slot_and_outcome(e, expected):
    seen = outcome(e)
    if expected is None:
        assert seen is None
        return
    slot, at, latency_ms, failed = seen
    assert (slot, failed) == expected
    assert latency_ms == pytest.approx(4.0) and at == pytest.approx(NOW + 0.004)


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
    """A MetricSource answering per (builtin, slot); records every question."""

    def __init__(self, answers: dict[tuple[str | None, str], float]) -> None:
        self.answers = answers
        self.asked: list[tuple[str | None, str, float, str]] = []

    def value(self, query, *, slot: str, window_s: float, model: str = "") -> float:
        self.asked.append((query.builtin, slot, window_s, model))
        answer = self.answers.get((query.builtin, slot))
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
