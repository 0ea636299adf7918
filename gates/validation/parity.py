"""Output parity: the same requests sent to both slots (the user's samples, or seeded random
inputs); every output must agree. Float outputs within a tolerance (per output), integer,
boolean and BYTES outputs exactly, outputs marked as class scores also on the top-1 class.
NaN where the active slot has none fails. A decoupled model's answer is its whole stream of
responses, joined per output (another sequence or count of responses is a mismatch); at
most STREAMS random streams. Samples with expected outputs are also compared
with those (absolute parity), and a mismatch names the sample and the output."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gates.validation.report import CheckResult
from gates.validation.settings import ParitySettings
from gates.validation.target import SlotTarget
from triton_slots.samples import Sample
from triton_slots.signature import ModelSignature, TensorSpec
from triton_slots.tensors import Hints, random_inputs


@dataclass
class _OutputStats:
    """What was seen for one output over every request compared."""

    exact: bool
    class_scores: bool
    compared: int = 0
    mismatched: int = 0  # exact outputs: requests whose values differ
    nan_rows: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    top1_total: int = 0
    top1_agree: int = 0
    first_mismatch: str = ""
    shape_problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"compared": self.compared, "exact": self.exact}
        if self.exact:
            data["mismatched"] = self.mismatched
        else:
            data.update(nan_rows=self.nan_rows, max_abs_diff=_num(self.max_abs),
                        max_rel_diff=_num(self.max_rel))
        if self.class_scores:
            data["top1_agreement"] = (self.top1_agree / self.top1_total
                                      if self.top1_total else None)
        if self.first_mismatch:
            data["first_mismatch"] = self.first_mismatch
        return data


def _num(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)


def equal_exact(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and the same values (BYTES compared as bytes)."""
    if a.shape != b.shape:
        return False
    if a.dtype == np.object_ or b.dtype == np.object_:
        return all(_as_bytes(x) == _as_bytes(y)
                   for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True))
    return bool(np.array_equal(a, b))


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _compare(stats: _OutputStats, tensor: TensorSpec, got: np.ndarray, want: np.ndarray,
             label: str, tolerance: tuple[float, float | None, bool]) -> None:
    stats.compared += 1
    if got.shape != want.shape:
        stats.mismatched += 1
        stats.shape_problems.append(f"{label}: shape {list(got.shape)} vs "
                                    f"{list(want.shape)}")
        stats.first_mismatch = stats.first_mismatch or f"{label}: shape differs"
        return
    if stats.exact:
        if not equal_exact(got, want):
            stats.mismatched += 1
            stats.first_mismatch = stats.first_mismatch or label
        return
    g, w = got.astype(np.float64), want.astype(np.float64)
    new_nan = np.isnan(g) & ~np.isnan(w)
    if new_nan.any():
        stats.nan_rows += 1
        stats.first_mismatch = stats.first_mismatch or f"{label}: NaN"
    diff = np.abs(g - w)
    finite = np.isfinite(diff)
    if finite.any():
        max_abs = float(diff[finite].max())
        max_rel = float((diff / np.maximum(np.abs(w), 1e-6))[finite].max())
        max_abs_limit, max_rel_limit, _ = tolerance
        if (max_abs > max_abs_limit or (max_rel_limit is not None and max_rel > max_rel_limit)
                ) and not stats.first_mismatch:
            stats.first_mismatch = f"{label}: max abs diff {max_abs:.4g}"
        stats.max_abs = max(stats.max_abs, max_abs)
        stats.max_rel = max(stats.max_rel, max_rel)
    elif (np.isinf(g) != np.isinf(w)).any():
        stats.max_abs = stats.max_rel = float("inf")
    if stats.class_scores and g.ndim >= 1 and g.size:
        top_g = np.argmax(np.nan_to_num(g, nan=-np.inf).reshape(-1, g.shape[-1]), axis=1)
        top_w = np.argmax(w.reshape(-1, w.shape[-1]), axis=1)
        stats.top1_total += len(top_g)
        stats.top1_agree += int((top_g == top_w).sum())


def _problems(name: str, stats: _OutputStats, s: ParitySettings, what: str) -> list[str]:
    max_abs, max_rel, class_scores = s.tolerance(name)
    out: list[str] = []
    if stats.shape_problems:
        out.append(f"{what} {name}: {stats.shape_problems[0]}")
    if stats.exact:
        if stats.mismatched and not stats.shape_problems:
            out.append(f"{what} {name}: {stats.mismatched}/{stats.compared} requests differ "
                       f"(exact; first {stats.first_mismatch})")
        return out
    if stats.nan_rows:
        out.append(f"{what} {name}: NaN in {stats.nan_rows}/{stats.compared} requests "
                   f"(first {stats.first_mismatch})")
    if not stats.max_abs <= max_abs:
        out.append(f"{what} {name}: max abs diff {stats.max_abs:.4g} > {max_abs:g} "
                   f"(first {stats.first_mismatch})")
    if max_rel is not None and not stats.max_rel <= max_rel:
        out.append(f"{what} {name}: max rel diff {stats.max_rel:.4g} > {max_rel:g}")
    if class_scores and stats.top1_total:
        agree = stats.top1_agree / stats.top1_total
        if agree < s.min_top1_agreement:
            out.append(f"{what} {name}: top-1 agreement {agree:.3f} < "
                       f"{s.min_top1_agreement}")
    return out


#: Random requests to a decoupled model, at most: each is a whole stream (its responses
#: joined and compared as one sequence), so a few dozen cover what hundreds of rows do.
STREAMS = 32


def _random_requests(sig: ModelSignature, s: ParitySettings, hints: Hints | None
                     ) -> list[Sample]:
    if sig.batched:
        batch = max(1, min(s.batch, sig.max_batch_size))
        data = random_inputs(sig, s.samples, seed=s.seed, hints=hints)
        return [Sample(f"random rows {i}-{min(i + batch, s.samples) - 1}",
                       {k: v[i:i + batch] for k, v in data.items()})
                for i in range(0, s.samples, batch)]
    count = min(s.samples, STREAMS) if sig.decoupled else s.samples
    return [Sample(f"random request {i}", random_inputs(sig, 1, seed=s.seed + i, hints=hints))
            for i in range(count)]


def check_parity(candidate: SlotTarget, baseline: SlotTarget | None, sig: ModelSignature,
                 s: ParitySettings, *, samples: list[Sample] | None = None,
                 hints: Hints | None = None) -> CheckResult:
    started = time.monotonic()
    requests = samples if samples else _random_requests(sig, s, hints)
    has_expected = any(r.expected for r in requests)
    if baseline is None and not has_expected:
        return CheckResult("parity", False, "no active slot to compare with", {}, 0.0,
                           dry_run=s.dry_run)

    def fresh() -> dict[str, _OutputStats]:
        return {t.name: _OutputStats(t.is_exact, s.tolerance(t.name)[2] and not t.is_exact)
                for t in sig.outputs}

    relative, absolute = fresh(), fresh()
    cand_client = candidate.client()
    base_client = baseline.client() if baseline else None
    try:
        for request in requests:
            got = candidate.infer(sig, request.inputs, cand_client)
            want: Mapping[str, np.ndarray] = (
                baseline.infer(sig, request.inputs, base_client) if baseline else {})
            for tensor in sig.outputs:
                if tensor.name not in got:
                    continue
                tolerance = s.tolerance(tensor.name)
                if tensor.name in want:
                    _compare(relative[tensor.name], tensor, got[tensor.name],
                             want[tensor.name], request.label, tolerance)
                if tensor.name in request.expected:
                    expected = request.expected[tensor.name].astype(
                        got[tensor.name].dtype, copy=False) \
                        if got[tensor.name].dtype != np.object_ else request.expected[tensor.name]
                    _compare(absolute[tensor.name], tensor, got[tensor.name], expected,
                             request.label, tolerance)
    finally:
        cand_client.close()
        if base_client is not None:
            base_client.close()
    problems: list[str] = []
    for tensor in sig.outputs:
        if baseline is not None:
            problems += _problems(tensor.name, relative[tensor.name], s, "output")
        if absolute[tensor.name].compared:
            problems += _problems(tensor.name, absolute[tensor.name], s, "expected output")
    evidence = {
        "requests": len(requests), "source": "samples" if samples else "random",
        "seed": s.seed,
        "outputs": {name: st.as_dict() for name, st in relative.items()},
        "expected": {name: st.as_dict() for name, st in absolute.items() if st.compared},
        "tolerance": {"max_abs_diff": s.max_abs_diff, "max_rel_diff": s.max_rel_diff,
                      "min_top1_agreement": s.min_top1_agreement,
                      "per_output": {k: vars(v) for k, v in s.outputs.items()}},
    }
    if problems:
        summary = "; ".join(problems)
    else:
        parts = [f"{t.name} " + ("exact" if t.is_exact else
                                 f"max abs diff {relative[t.name].max_abs:.2g}")
                 for t in sig.outputs if baseline is not None]
        summary = (", ".join(parts) + f" over {len(requests)} requests"
                   + (" (and expected outputs)" if has_expected else ""))
    return CheckResult("parity", not problems, summary, evidence,
                       time.monotonic() - started, dry_run=s.dry_run)
