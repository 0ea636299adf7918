"""JSON log lines carry the current rollout's id and step."""

from __future__ import annotations

import json
import logging

from turnout.logs import JsonFormatter, LogFormat, RolloutFilter, configure, set_rollout


def test_json_lines_carry_the_rollout_and_step(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure(LogFormat.JSON)
    try:
        set_rollout("r42", 2)
        logging.getLogger("turnout.test").warning("gate %s failed", "p99")
        set_rollout(None, None)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("turnout.test").exception("oops")
    finally:
        root.handlers[:], level = saved  # leave pytest's logging as it was
        root.setLevel(level)
        set_rollout(None, None)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["level"] == "warning" and lines[0]["message"] == "gate p99 failed"
    assert (lines[0]["rollout"], lines[0]["step"], lines[0]["logger"]) == \
        ("r42", 2, "turnout.test")
    assert lines[0]["ts"].endswith("Z")
    assert (lines[1]["rollout"], lines[1]["step"]) == (None, None)
    assert "ValueError: boom" in lines[1]["exception"]


def test_the_filter_stamps_every_record_with_the_current_rollout():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    set_rollout("r7", 3)
    try:
        assert RolloutFilter().filter(record) is True
    finally:
        set_rollout(None, None)
    assert (record.rollout, record.step) == ("r7", 3)
    assert json.loads(JsonFormatter().format(record))["rollout"] == "r7"


def test_history_reads_as_a_timeline():
    from turnout.cli_rollout import render_history

    base = 1_795_000_000.0
    entries = [
        {"at": base, "actor": "stack-admin", "kind": "weights", "weights": {"blue": 70,
         "green": 30}, "message": "weights set", "rollout": None},
        {"at": base + 1, "actor": "alice", "kind": "apply", "weights": None,
         "phase_from": None, "phase_to": "pending", "message": "applied p.yaml",
         "rollout": "r1"},
        {"at": base + 3.5, "actor": "controller", "kind": "transition", "weights": None,
         "phase_from": "pending", "phase_to": "deploying", "message": "deploying",
         "rollout": "r1"},
    ]
    lines = render_history(entries)
    assert lines[0].startswith("== ") and lines[2] == "-- rollout r1 --"
    assert "+   0.0s alice" in lines[3] and "-> pending" in lines[3]
    assert "+   2.5s controller" in lines[4] and "pending -> deploying" in lines[4]
    assert "b70/g30" in lines[1]


def test_bake_progress_bar():
    from turnout.cli_rollout import progress_bar

    assert progress_bar(0.5, 10) == "[#####.....]"
    assert progress_bar(2.0, 4) == "[####]" and progress_bar(-1, 4) == "[....]"
