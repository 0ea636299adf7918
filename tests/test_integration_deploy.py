"""Registry -> idle slot deploy -> validation suite, with real Triton behind real Envoy."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from gates.validation import ValidationSettings
from gates.validation.settings import LatencySettings
from triton_slots.admin import TritonAdmin
from triton_slots.delivery import DIGEST_PARAMETER
from triton_slots.deploy import DeployError
from triton_slots.loadgen import LoadGenerator
from turnout import workflow

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"
# Looser than the defaults (a shared 2-core CI box is noisy); v3 is ~20x slower anyway.
FAST = ValidationSettings(latency=LatencySettings(requests=180, max_p99_ratio=3.0,
                                                 p99_budget_ms=100.0))


@pytest.fixture(scope="module")
def registry(live):
    registry = workflow.registry_for(live.directory)
    for version in ("v2", "v3"):
        registry.push(EXAMPLES / version, name="classifier", version=version)
    return registry


def _served_digest(live, slot: str) -> str:
    endpoint = live.servers[slot][0].endpoint
    config = TritonAdmin(endpoint).model_config("classifier")
    return config["parameters"][DIGEST_PARAMETER]["string_value"]


def _green_upstream(live) -> int:
    return live.envoy.stats("cluster.slot_green.upstream_rq_total")[
        "cluster.slot_green.upstream_rq_total"]


def test_deploy_v2_to_green_while_blue_serves(live, registry):
    assert live.set_green(0).converged
    blue_digest = _served_digest(live, "blue")
    green_before = _green_upstream(live)
    load = LoadGenerator(live.ingress, model="classifier", concurrency=4).start()
    try:
        time.sleep(0.3)
        result = workflow.deploy_to_idle(live.directory, "classifier", "v2", progress=print)
        time.sleep(0.3)
    finally:
        stats = load.stop()
    assert result.slot == "green"
    assert stats.failed == 0, stats.errors
    assert stats.ok > 100
    assert _green_upstream(live) == green_before, "green got traffic without the header"
    record = registry.get("classifier", "v2")
    assert (record.slot, record.stage) == ("green", "candidate")
    assert _served_digest(live, "green") == record.digest
    assert _served_digest(live, "blue") == blue_digest


def test_v2_passes_the_suite_and_the_report_is_stored(live, registry):
    report = workflow.validate(live.directory, "classifier", "v2", settings=FAST)
    assert report.passed, report.table()
    assert [c.name for c in report.checks] == ["adversarial", "parity", "latency"]
    stored = registry.report("classifier", "v2", "validation")
    assert stored["passed"] is True and stored["digest"] == report.digest
    cases = report.checks[0].evidence["cases"]
    assert len(cases) == 11 and all(c["refused_ok"] for c in cases.values())


def test_v3_fails_parity_and_latency_with_evidence(live, registry):
    workflow.deploy_to_idle(live.directory, "classifier", "v3", progress=print)
    report = workflow.validate(live.directory, "classifier", "v3", settings=FAST)
    checks = {c.name: c for c in report.checks}
    assert not report.passed
    assert checks["adversarial"].passed
    assert not checks["parity"].passed
    assert checks["parity"].evidence["outputs"]["PROBS"]["nan_rows"] > 0
    assert not checks["latency"].passed
    ratios = [row["p99_ratio"] for row in checks["latency"].evidence["batches"].values()]
    assert all(r > FAST.latency.max_p99_ratio for r in ratios), ratios
    record = registry.get("classifier", "v3")
    assert record.stage == "failed" and "parity" in record.stage_reason


def test_corrupted_artifact_is_refused_and_blue_untouched(live, registry):
    registry.push(EXAMPLES / "v2", name="classifier", version="v2-corrupt", source="test")
    record = registry.get("classifier", "v2-corrupt")
    (record.path / "1" / "weights.npz").write_bytes(b"bit rot")
    blue_digest = _served_digest(live, "blue")
    with pytest.raises(DeployError, match="corrupted artifact"):
        workflow.deploy_to_idle(live.directory, "classifier", "v2-corrupt", progress=print)
    assert registry.get("classifier", "v2-corrupt").stage == "failed"
    assert _served_digest(live, "blue") == blue_digest


def test_load_error_is_reported_and_marks_failed(live, registry, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLES / "v2", broken)
    model = broken / "1" / "model.py"
    model.write_text(model.read_text().replace(
        "config = json.loads(args[\"model_config\"])",
        "raise RuntimeError(\"weights server unreachable\")"))
    registry.push(broken, name="classifier", version="v2-broken")
    blue_digest = _served_digest(live, "blue")
    with pytest.raises(DeployError, match="weights server unreachable"):
        workflow.deploy_to_idle(live.directory, "classifier", "v2-broken", timeout=60,
                                progress=print)
    record = registry.get("classifier", "v2-broken")
    assert record.stage == "failed" and "weights server unreachable" in record.stage_reason
    assert _served_digest(live, "blue") == blue_digest
    assert TritonAdmin(live.servers["blue"][0].endpoint).model_ready("classifier")


def test_deploy_refuses_a_slot_with_traffic(live, registry):
    assert live.set_green(10).converged
    try:
        with pytest.raises(Exception, match="no single idle slot"):
            workflow.deploy_to_idle(live.directory, "classifier", "v2", progress=print)
    finally:
        assert live.set_green(0).converged
