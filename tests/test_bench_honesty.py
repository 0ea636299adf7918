"""Benchmarks cannot flatter: a rollback before the fault is a false positive, never a
fast rollback; "met" needs every trial valid."""

from __future__ import annotations

from bench.report import rollback_time
from bench.rollback_time import classify

FAILED_ROUND = {"kind": "gates", "evidence": {"phase": "Failed"}}


def test_a_rollback_before_the_fault_is_a_false_positive():
    done = {"phase": "rolled_back", "rollback_decided_at": 97.5, "rollback_acked_at": 97.6}
    row = classify(done, [{**FAILED_ROUND, "at": 97.0}], fault_at=100.0)
    assert row["outcome"] == "false_positive" and row["decided_before_fault_s"] == 2.5
    assert "to_zero_acked_s" not in row


def test_detected_and_missed_trials():
    done = {"phase": "rolled_back", "rollback_decided_at": 102.0, "rollback_acked_at": 102.1}
    history = [{**FAILED_ROUND, "at": 99.0}, {**FAILED_ROUND, "at": 101.0}]
    row = classify(done, history, fault_at=100.0)
    assert row == {"phase": "rolled_back", "outcome": "detected", "to_first_failing_s": 1.0,
                   "to_decision_s": 2.0, "to_zero_acked_s": 2.1}
    assert classify({"phase": "paused"}, [], 100.0)["outcome"] == "missed"


def _config(rows: list[dict]) -> dict:
    from bench.rollback_time import summarise

    return summarise({"name": "envoy stream", "source": "envoy", "prometheus": "running",
                      "interval": "200ms", "window": "600ms"}, rows)


DETECTED = {"phase": "rolled_back", "outcome": "detected", "to_first_failing_s": 0.3,
            "to_decision_s": 0.5, "to_zero_acked_s": 0.52}
EARLY = {"phase": "rolled_back", "outcome": "false_positive", "decided_before_fault_s": 1.24}


def _report(rows: list[dict]) -> str:
    return "\n".join(rollback_time({
        "scrape_interval_s": 1.0, "envoy_stats_flush_s": 1.0, "access_log_flush_s": 0.1,
        "failure_limit": 1, "load": {"sent": 10, "failed": 0}, "configs": [_config(rows)]}))


def test_report_keeps_false_positives_out_of_the_figures_and_misses_the_target():
    config = _config([DETECTED, EARLY])
    assert (config["detected"], config["false_positives"], config["missed"]) == (1, 1, 0)
    assert config["median_to_zero_acked_s"] == 0.52  # the false positive is not a figure
    text = _report([DETECTED, EARLY])
    assert "| envoy | running | 200ms / 600ms | 1/2 | 1 | 0 | 0.30 | 0.50 | 0.52 | 0.52 | " \
        "**missed** |" in text
    assert "false positive (1.24 s before the fault)" in text
    assert "| 1/1 | 0 | 0 |" in _report([DETECTED]) and _report([DETECTED]).count(" met |") == 1


def test_a_slow_median_or_a_missed_trial_fails_the_target():
    slow = {**DETECTED, "to_zero_acked_s": 1.3}
    assert " met |" in _report([DETECTED, DETECTED, slow])  # median 0.52 s, max 1.3 s
    assert "| 1.30 |" in _report([DETECTED, DETECTED, slow])
    assert "**missed** |" in _report([DETECTED, slow, slow])  # median 1.3 s
    missed = {"phase": "paused", "outcome": "missed"}
    text = _report([DETECTED, missed])
    assert "| 1/2 | 0 | 1 |" in text and "missed (paused)" in text


def test_a_partial_mutation_run_is_never_met():
    from bench.mutation import report

    rows = [("m", f"m.x_f__mutmut_{i}", "killed") for i in range(9)]
    rows.append(("m", "m.x_f__mutmut_9", "not checked"))
    text, _summary = report(rows, {})
    assert "| `m` | 10 | 9 | 9 | 0 | 0 | 0 | 100.0% | partial (9/10 checked) |" in text
    rows[-1] = ("m", "m.x_f__mutmut_9", "killed")
    assert "| 100.0% | met |" in report(rows, {})[0]
    rows[-1] = ("m", "m.x_f__mutmut_9", "survived")
    rows[-2] = ("m", "m.x_f__mutmut_8", "survived")
    assert "| 80.0% | missed |" in report(rows, {})[0]


def _fleet_run(streams: int, servers: int, p50: float, *, pushes: int = 20,
               in_sync: int | None = None) -> dict:
    return {"streams": streams, "protocol": "sotw", "server_processes": servers,
            "client_processes": 4, "in_sync": streams if in_sync is None else in_sync,
            "connect_s": 1.0, "incomplete_pushes": 0, "rss_per_stream_kib": 50.0,
            "cpu_per_push_per_stream_us": 150.0,
            "last_ack": {"n": pushes, "p50_ms": p50, "p99_ms": p50 * 1.2, "max_ms": p50 * 1.3}}


def test_fleet_report_shows_no_p99_under_50_pushes_and_ratios_to_one_process():
    from bench.report import fleet

    text = "\n".join(fleet({"runs": [_fleet_run(1000, 1, 200.0, pushes=50),
                                     _fleet_run(1000, 2, 100.0, pushes=20)]}))
    rows = [line for line in text.splitlines() if line.startswith("| 1000 ")]
    assert "| 240.0 |" in rows[0] and "- (<50 pushes)" in rows[1]
    assert "| 0.50 |" in rows[1]  # p50 against one process in the same run
    assert "best 100.0 ms" in text and "missed" in text  # 100 ms is not < 50 ms


def test_fleet_target_needs_every_stream_connected():
    from bench.report import fleet

    text = "\n".join(fleet({"runs": [_fleet_run(1000, 1, 10.0, in_sync=990)]}))
    assert "every stream connected in every run **missed**" in text
    assert "1000 streams p50 < 50 ms: best" not in text  # an incomplete run is no best


def test_failover_target_needs_no_failed_request():
    from bench.report import failover

    data = {"trials": [{}] * 10, "elected_median_s": 0.1, "elected_max_s": 0.2,
            "pushed_median_s": 0.3, "pushed_max_s": 0.5, "both_envoys_median_s": 1.0,
            "both_envoys_max_s": 2.0, "requests": 1000, "failed": 1, "all_converged": True}
    row = next(line for line in failover(data) if line.startswith("| 0.1 "))
    assert row.endswith("| **missed** |")


def test_a_module_not_run_keeps_its_earlier_figures_marked_stale_if_changed():
    from bench.mutation import report, source_digest

    rows = [("turnout.weights", "turnout.weights.x_f__mutmut_1", "not checked")]
    earlier = {"turnout.weights": {"mutants": 1, "checked": 1, "killed": 1, "score": 1.0,
                                   "measured_at": "2026-01-01 00:00 UTC",
                                   "source_digest": "not-the-current-source"}}
    text, _ = report(rows, {}, earlier)
    assert "| met, run of 2026-01-01 00:00 UTC; **stale**: the source changed since |" in text
    earlier["turnout.weights"]["source_digest"] = source_digest("turnout.weights")
    earlier["turnout.weights"]["mutants"] = 2  # an interrupted run stays partial
    text, _ = report(rows, {}, earlier)
    assert "| partial, run of 2026-01-01 00:00 UTC |" in text
