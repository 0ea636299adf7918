"""Does a policy fit the model it rolls out? Input hints, per-output tolerances and the
samples file checked against the model's signature, each problem naming the field, the
tensor and the mismatch. Used by ``turnout lint`` and before a rollout starts."""

from __future__ import annotations

from pathlib import Path

from triton_slots.samples import SamplesError, check_samples, load_samples
from triton_slots.signature import ModelSignature
from turnout.policy.model import Policy


def fit_problems(policy: Policy, sig: ModelSignature) -> list[str]:
    where = policy.source or policy.name
    v = policy.validation
    problems: list[str] = []
    inputs = {t.name: t for t in sig.inputs}
    for name, hint in v.inputs.items():
        if name not in inputs:
            problems.append(f"{where}: spec.validation.inputs.{name}: {sig.name} has no input "
                            f"{name!r} (inputs: {', '.join(inputs)})")
            continue
        dims = inputs[name].dims
        if hint.shape is not None:
            if len(hint.shape) != len(dims):
                problems.append(f"{where}: spec.validation.inputs.{name}.shape: "
                                f"{list(hint.shape)} has rank {len(hint.shape)}; {name} has "
                                f"dims {list(dims)} (without the batch dimension)")
            elif any(d >= 0 and h != d for h, d in zip(hint.shape, dims, strict=True)):
                problems.append(f"{where}: spec.validation.inputs.{name}.shape: "
                                f"{list(hint.shape)} contradicts the static dims {list(dims)}")
    outputs = {t.name for t in sig.outputs}
    for name in v.parity.outputs:
        if name not in outputs:
            problems.append(f"{where}: spec.validation.parity.outputs.{name}: {sig.name} has "
                            f"no output {name!r} (outputs: {', '.join(sorted(outputs))})")
    if v.samples:
        try:
            samples = load_samples(Path(v.samples), sig)
        except SamplesError as exc:
            problems.append(f"{where}: spec.validation.samples: {exc}")
        else:
            problems += [f"{where}: spec.validation.samples: {p}"
                         for p in check_samples(sig, samples)]
    return problems
