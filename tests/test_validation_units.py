"""The validation checks' verdicts against fake slots (the comparisons, not the transport)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from gates.validation.parity import check_parity
from gates.validation.report import CheckResult, ValidationReport
from gates.validation.settings import OutputTolerance, ParitySettings
from triton_slots.samples import Sample
from triton_slots.signature import ModelSignature

SIG = ModelSignature.from_config({
    "name": "m", "max_batch_size": 8,
    "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [3]}],
    "output": [{"name": "SCORES", "data_type": "TYPE_FP32", "dims": [3]},
               {"name": "LABEL", "data_type": "TYPE_INT64", "dims": [1]},
               {"name": "NAME", "data_type": "TYPE_STRING", "dims": [1]}]})


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"SCORES": x.astype(np.float32),
            "LABEL": np.argmax(x, axis=1, keepdims=True).astype(np.int64),
            "NAME": np.array([[b"n%d" % int(i)] for i in np.argmax(x, axis=1)], np.object_)}


class FakeSlot:
    """A slot answering with ``model``; the same interface as ``SlotTarget``."""

    def __init__(self, slot: str, model: Callable[[np.ndarray], dict[str, np.ndarray]]):
        self.slot, self.model = slot, model

    def client(self):
        return self

    def close(self) -> None:
        pass

    def infer(self, sig, arrays: Mapping[str, np.ndarray], client=None):
        return self.model(arrays["X"])


DEFAULT = ParitySettings(samples=64, batch=8)


def parity(model, settings: ParitySettings = DEFAULT, **kw) -> CheckResult:
    return check_parity(FakeSlot("green", model), FakeSlot("blue", reference), SIG, settings,
                        **kw)


def test_identical_outputs_pass():
    result = parity(reference)
    assert result.passed, result.summary
    assert result.evidence["outputs"]["LABEL"]["mismatched"] == 0


def test_float_output_within_tolerance_passes_and_beyond_fails():
    assert parity(lambda x: {**reference(x), "SCORES": reference(x)["SCORES"] + 0.01}).passed
    result = parity(lambda x: {**reference(x), "SCORES": reference(x)["SCORES"] + 0.05})
    assert not result.passed and "output SCORES: max abs diff 0.05" in result.summary
    loose = ParitySettings(samples=64, outputs={"SCORES": OutputTolerance(max_abs_diff=0.1)})
    assert parity(lambda x: {**reference(x), "SCORES": reference(x)["SCORES"] + 0.05},
                  loose).passed


def test_integer_and_bytes_outputs_are_exact():
    off_by_one = parity(lambda x: {**reference(x), "LABEL": reference(x)["LABEL"] + 1})
    assert not off_by_one.passed and "output LABEL: 8/8 requests differ (exact" in \
        off_by_one.summary
    renamed = parity(lambda x: {**reference(x), "NAME": np.array([[b"other"]] * len(x),
                                                                 np.object_)})
    assert not renamed.passed and "output NAME" in renamed.summary


def test_nan_fails_even_within_tolerance():
    def nan_once(x):
        out = reference(x)
        out["SCORES"] = out["SCORES"].copy()
        out["SCORES"][0, 0] = np.nan
        return out
    result = parity(nan_once)
    assert not result.passed and "output SCORES: NaN in 8/8 requests" in result.summary


def test_top1_agreement_only_for_class_scores():
    def shuffled(x):
        out = reference(x)
        out["SCORES"] = out["SCORES"][:, ::-1].copy() * 0 + out["SCORES"] + 0.001
        out["SCORES"][:, 0] += 0.009  # within tolerance, but the top class moves often
        return out
    plain = ParitySettings(samples=64, max_abs_diff=0.02)
    assert parity(shuffled, plain).passed
    scored = ParitySettings(samples=64, max_abs_diff=0.02, min_top1_agreement=0.99,
                            outputs={"SCORES": OutputTolerance(class_scores=True)})
    result = parity(shuffled, scored)
    assert not result.passed and "output SCORES: top-1 agreement" in result.summary


def test_expected_outputs_name_the_sample_and_the_output():
    x = np.array([[0.1, 0.9, 0.0]], np.float32)
    samples = [Sample("s.jsonl:1", {"X": x}, {"LABEL": np.array([[1]])}),
               Sample("s.jsonl:2", {"X": x}, {"LABEL": np.array([[2]])})]
    result = parity(reference, samples=samples)
    assert not result.passed
    assert "expected output LABEL: 1/2 requests differ (exact; first s.jsonl:2)" in \
        result.summary
    assert "output SCORES" not in result.summary
    no_baseline = check_parity(FakeSlot("green", reference), None, SIG, ParitySettings(),
                               samples=samples[:1])
    assert no_baseline.passed  # expected outputs alone make parity absolute


def test_no_baseline_and_no_expected_outputs_fails():
    result = check_parity(FakeSlot("green", reference), None, SIG, ParitySettings())
    assert not result.passed and "no active slot" in result.summary


def test_dry_run_checks_never_decide_and_no_checks_validates_nothing():
    failing_dry = CheckResult("latency", False, "slow", dry_run=True)
    report = ValidationReport("m:v", "d", "green", "blue", 0.0,
                              checks=[CheckResult("parity", True, "ok"), failing_dry])
    assert report.passed and "latency (dry run) FAILED: slow" in report.summary
    report.checks.append(CheckResult("adversarial", False, "crashed"))
    assert not report.passed and report.summary.startswith("adversarial: crashed")
    empty = ValidationReport("m:v", "d", "green", "blue", 0.0)
    assert empty.passed and empty.summary == "no checks configured: nothing validated"
