"""Does a policy fit the model it rolls out: each problem names the policy file, the field,
the tensor and the mismatch; a policy that fits has none."""

from __future__ import annotations

import numpy as np

from triton_slots.signature import ModelSignature, TensorSpec
from turnout.policy import load_text
from turnout.policy.fit import fit_problems

SIG = ModelSignature(
    "ranker",
    inputs=(TensorSpec("tokens", "INT64", (-1, 8)), TensorSpec("mask", "FP32", (4,))),
    outputs=(TensorSpec("scores", "FP32", (3,)), TensorSpec("ids", "INT64", (1,))),
    max_batch_size=8)


def policy(validation: str, source: str = "p.yaml"):  # type: ignore[no-untyped-def]
    return load_text(f"""
apiVersion: turnout/v1
kind: Rollout
metadata: {{name: r}}
spec:
  model: ranker:v2
  validation: {validation}
""", source)


def test_a_fitting_policy_has_no_problem():
    p = policy("{inputs: {tokens: {shape: [5, 8]}, mask: {shape: [4]}}, "
               "parity: {outputs: {scores: {classScores: true}}}}")
    assert fit_problems(p, SIG) == []


def test_each_misfit_is_named_with_file_field_tensor_and_reason():
    p = policy("{inputs: {nope: {shape: [1]}, tokens: {shape: [8]}, mask: {shape: [5]}}, "
               "parity: {outputs: {probs: {maxAbsDiff: 0.1}, ids: {}}}}")
    assert fit_problems(p, SIG) == [
        "p.yaml: spec.validation.inputs.nope: ranker has no input 'nope' "
        "(inputs: tokens, mask)",
        "p.yaml: spec.validation.inputs.tokens.shape: [8] has rank 1; tokens has dims "
        "[-1, 8] (without the batch dimension)",
        "p.yaml: spec.validation.inputs.mask.shape: [5] contradicts the static dims [4]",
        "p.yaml: spec.validation.parity.outputs.probs: ranker has no output 'probs' "
        "(outputs: ids, scores)",
    ]


def test_a_policy_without_a_file_is_named_by_its_name():
    p = policy("{inputs: {tokens: {shape: [3, 9]}}}", source="")
    assert fit_problems(p, SIG) == [
        "r: spec.validation.inputs.tokens.shape: [3, 9] contradicts the static dims [-1, 8]"]


def test_samples_are_read_and_checked_against_the_signature(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, tokens=np.zeros((2, 5, 8), np.int64), mask=np.zeros((2, 4), np.float32))
    assert fit_problems(policy(f"{{samples: {good}}}", str(tmp_path / "p.yaml")), SIG) == []
    bad = tmp_path / "bad.npz"
    np.savez(bad, tokens=np.zeros((2, 5, 8), np.float32), mask=np.zeros((2, 4), np.float32))
    problems = fit_problems(policy(f"{{samples: {bad}}}", str(tmp_path / "p.yaml")), SIG)
    assert problems and all(
        p.startswith(f"{tmp_path / 'p.yaml'}: spec.validation.samples: ") for p in problems)
    assert "input 'tokens' is FP32; ranker expects INT64" in problems[0]
    unreadable = tmp_path / "u.npz"
    unreadable.write_text("not a zip")
    (problem,) = fit_problems(policy(f"{{samples: {unreadable}}}",
                                     str(tmp_path / "p.yaml")), SIG)
    assert problem.startswith(f"{tmp_path / 'p.yaml'}: spec.validation.samples: {unreadable}: "
                              "not a readable .npz file")


def test_a_static_dim_of_zero_is_still_static():
    sig = ModelSignature("z", inputs=(TensorSpec("x", "FP32", (0, 4)),),
                         outputs=(TensorSpec("y", "FP32", (1,)),))
    p = policy("{inputs: {x: {shape: [2, 4]}}}")
    assert fit_problems(p, sig) == [
        "p.yaml: spec.validation.inputs.x.shape: [2, 4] contradicts the static dims [0, 4]"]
