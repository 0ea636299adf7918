"""The built-in per-slot queries: how their placeholders are filled, and what the rendered
PromQL counts when real Prometheus (``promtool test rules``) evaluates it over series of
both slots, several clusters and models whose names differ only where a regex dot would
match."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gates.metrics.builtins import BUILTINS, render


def test_placeholders_name_the_slot_its_clusters_the_model_and_the_window():
    assert render("$slot", slot="green", window_s=5) == "green"
    assert render("$cluster", slot="green", window_s=5) == "slot_green"
    assert render("$clusters", slot="blue", window_s=5) == (
        "slot_blue|slot_blue_ha|slot_blue_http|slot_blue_http_ha")
    # A literal dot inside a PromQL string literal is written \\. (two backslashes).
    assert render("$model", slot="green", window_s=5, model="m.v1.x") == r"m\\.v1\\.x"
    assert render("$model", slot="green", window_s=5, model="plain") == "plain"
    assert render("$model", slot="green", window_s=5) == ".+"
    assert render("$model", slot="green", window_s=5, model="") == ".+"


@pytest.mark.parametrize(("window_s", "expected"), [(0.2, "1s"), (1.0, "1s"), (1.6, "2s"),
                                                    (6.0, "6s"), (300.4, "300s")])
def test_window_is_whole_seconds_and_never_zero(window_s, expected):
    assert render("$window", slot="blue", window_s=window_s) == expected


def test_unknown_placeholders_are_left_alone():
    assert render("$nothing $slot", slot="blue", window_s=1) == "$nothing blue"


def test_every_builtin_renders_without_placeholders():
    for name, query in BUILTINS.items():
        rendered = render(query, slot="green", window_s=6, model="m")
        assert "$" not in rendered, name


# Counters sampled every minute, evaluated at 10m over a 5m window. Green's traffic to
# model "m.v" is the one measured; blue's, and green's model "mxv" (what "m.v" matches if
# the dot is not escaped), are large decoys.
SERIES = {
    'nv_inference_request_success{slot="green",model="m.v"}': 70,
    'nv_inference_request_failure{slot="green",model="m.v"}': 5,
    'nv_inference_request_failure{slot="green",model="mxv"}': 1000,
    'nv_inference_request_failure{slot="blue",model="m.v"}': 1000,
    # Undelivered requests, one kind on each of green's four clusters (5 a minute).
    'envoy_cluster_upstream_rq_retry_limit_exceeded{envoy_cluster_name="slot_green_ha"}': 2,
    'envoy_cluster_upstream_cx_none_healthy{envoy_cluster_name="slot_green_http_ha"}': 1,
    'envoy_cluster_upstream_rq_timeout{envoy_cluster_name="slot_green_http"}': 1,
    'envoy_cluster_upstream_rq_timeout{envoy_cluster_name="slot_green"}': 1,
    'envoy_cluster_upstream_rq_timeout{envoy_cluster_name="slot_blue"}': 1000,
    # Requests Envoy sent, on each of green's clusters (60 a minute in all).
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="slot_green"}': 24,
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="slot_green_ha"}': 12,
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="slot_green_http"}': 18,
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="slot_green_http_ha"}': 6,
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="slot_blue"}': 600,
}


def _evaluate(tmp_path: Path, cases: list[tuple[str, int]]) -> subprocess.CompletedProcess:
    """Each case is (query, expected round(1000 * value)) at 10m."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make prometheus` installs it with prometheus")
    (tmp_path / "rules.yml").write_text("groups: []\n")
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": f"0+{v}x10"} for s, v in SERIES.items()],
            "promql_expr_test": [
                {"expr": f"round(1000 * ({query}))", "eval_time": "10m",
                 "exp_samples": [{"labels": "{}", "value": expected}]}
                for query, expected in cases],
        }],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    return subprocess.run([promtool, "test", "rules", "test.yml"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def test_rendered_builtins_count_only_the_slot_its_clusters_and_the_model(tmp_path):
    green = {"slot": "green", "window_s": 300.0}
    cases = [
        # (5 failed + 5 undelivered) / (70 ok + 5 failed + 5 undelivered)
        (render(BUILTINS["error_rate"], model="m.v", **green), 125),
        # Every model of the slot: (1005 + 5) / (70 + 1005 + 5)
        (render(BUILTINS["error_rate"], **green), 935),
        # 60 requests a minute over the slot's four clusters: 1 per second.
        (render(BUILTINS["requests_rps"], **green), 1000),
    ]
    result = _evaluate(tmp_path, cases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_evaluation_can_fail(tmp_path):
    """The check above is not vacuous: a wrong expectation fails it."""
    green = {"slot": "green", "window_s": 300.0}
    result = _evaluate(tmp_path, [(render(BUILTINS["requests_rps"], **green), 999)])
    assert result.returncode != 0
    assert "exp: {} 9.99E+02" in result.stderr + result.stdout
    assert "got: {} 1E+03" in result.stderr + result.stdout
