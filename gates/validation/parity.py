"""Output parity: a seeded golden input set sent to both slots; outputs must agree within
a tolerance (max abs / rel difference) and on the top-1 class. NaN anywhere fails."""

from __future__ import annotations

import time

import numpy as np

from gates.validation.report import CheckResult
from gates.validation.settings import ParitySettings
from gates.validation.target import ModelSignature, SlotTarget


def _outputs(target: SlotTarget, sig: ModelSignature, inputs: np.ndarray, batch: int
             ) -> np.ndarray:
    client = target.client()
    try:
        parts = [target.infer(sig, inputs[i:i + batch], client)
                 for i in range(0, len(inputs), batch)]
    finally:
        client.close()
    return np.concatenate(parts)


def check_parity(candidate: SlotTarget, baseline: SlotTarget | None, sig: ModelSignature,
                 s: ParitySettings) -> CheckResult:
    started = time.monotonic()
    if baseline is None:
        return CheckResult("parity", False, "no active slot to compare with", {}, 0.0)
    inputs = sig.sample(s.samples, seed=s.seed)
    batch = min(s.batch, sig.max_batch_size) if sig.max_batch_size > 0 else 1
    expected = _outputs(baseline, sig, inputs, batch)
    actual = _outputs(candidate, sig, inputs, batch)
    nan_rows = int(np.isnan(actual).any(axis=tuple(range(1, actual.ndim))).sum())
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    finite = np.isfinite(diff)
    max_abs = float(diff[finite].max()) if finite.any() else float("nan")
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), 1e-6)
    max_rel = float(rel[finite].max()) if finite.any() else float("nan")
    flat_a = actual.reshape(len(actual), -1)
    flat_e = expected.reshape(len(expected), -1)
    agree = float(np.mean(np.argmax(np.nan_to_num(flat_a, nan=-np.inf), axis=1)
                          == np.argmax(flat_e, axis=1)))
    evidence = {
        "samples": int(s.samples), "seed": s.seed, "nan_rows": nan_rows,
        "max_abs_diff": max_abs, "max_rel_diff": max_rel, "top1_agreement": agree,
        "tolerance": {"max_abs_diff": s.max_abs_diff, "max_rel_diff": s.max_rel_diff,
                      "min_top1_agreement": s.min_top1_agreement},
    }
    problems = []
    if nan_rows:
        problems.append(f"{nan_rows}/{s.samples} rows with NaN output")
    if not max_abs <= s.max_abs_diff:  # NaN compares False: fails
        problems.append(f"max abs diff {max_abs:.4g} > {s.max_abs_diff}")
    if s.max_rel_diff is not None and not max_rel <= s.max_rel_diff:
        problems.append(f"max rel diff {max_rel:.4g} > {s.max_rel_diff}")
    if agree < s.min_top1_agreement:
        problems.append(f"top-1 agreement {agree:.3f} < {s.min_top1_agreement}")
    summary = "; ".join(problems) if problems else (
        f"max abs diff {max_abs:.2g}, top-1 agreement {agree:.3f} over {s.samples} inputs")
    return CheckResult("parity", not problems, summary, evidence, time.monotonic() - started)
