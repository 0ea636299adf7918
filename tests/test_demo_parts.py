"""The demos' parts that are not the stack (``make demo`` and ``make demo-stream`` run the
whole story): what each applies, how a gate value is printed, a directory it refuses."""

from __future__ import annotations

from turnout.assets import EXAMPLE_POLICIES
from turnout.demo import STREAMING, UNARY, _value, main
from turnout.policy import load_file


def test_each_demo_rolls_out_its_own_model_with_policies_that_load():
    for scenario in (UNARY, STREAMING):
        models = [load_file(EXAMPLE_POLICIES / f).model for f in scenario.policies]
        assert models == [f"{scenario.model}:v2", f"{scenario.model}:v3"]
        assert (scenario.versions / "v1" / "config.pbtxt").is_file()
    stream_v3 = load_file(EXAMPLE_POLICIES / STREAMING.policies[1])
    assert {m.builtin for m in stream_v3.gates.metrics} == {
        "ttft_p99_ms", "itl_p99_ms", "stream_error_rate"}
    assert {m.source for m in stream_v3.gates.metrics} == {"envoy"}


def test_a_gate_value_is_printed_with_the_active_slots_beside_it():
    assert _value({"metric": "ttft", "value": 251.0, "baseline": 13.2, "ratio": 19.0},
                  "blue") == "ttft 251 (blue 13.2, 19.00x)"
    assert _value({"metric": "errors", "value": 0.0, "baseline": None, "ratio": None},
                  "green") == "errors 0"
    assert _value({"metric": "itl", "value": 3.0, "baseline": 3.0, "ratio": None},
                  "green") == "itl 3 (green 3)"


def test_a_directory_that_is_not_a_demos_is_refused(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["--stream", "--dir", str(tmp_path)]) == 2
    assert "is not empty and not a demo directory" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
