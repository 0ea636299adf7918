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


def test_report_keeps_false_positives_out_of_the_figures_and_misses_the_target():
    data = {"gate_interval_s": 1.0, "scrape_interval_s": 1.0, "envoy_stats_flush_s": 1.0,
            "failure_limit": 1, "false_positives": 1, "missed": 0,
            "median_to_zero_acked_s": 3.0, "load": {"sent": 10, "failed": 0},
            "trials": [
                {"phase": "rolled_back", "outcome": "detected", "to_first_failing_s": 1.0,
                 "to_decision_s": 2.9, "to_zero_acked_s": 3.0},
                {"phase": "rolled_back", "outcome": "false_positive",
                 "decided_before_fault_s": 1.24}]}
    text = "\n".join(rollback_time(data))
    assert "false_positive (1.24 s before the fault) | - | - | - |" in text
    assert "1/2 trials detected the fault, 1 false positive(s)" in text
    assert "Median fault -> 0 % over detected trials: 3.00 s" in text
    assert text.splitlines()[-1].endswith(": **missed**.")  # a false positive fails it
    data["trials"] = data["trials"][:1]
    data["false_positives"] = 0
    assert rollback_time(data)[-1].endswith(": met.")
