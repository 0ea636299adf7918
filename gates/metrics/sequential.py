"""A sequential test of the candidate against the active slot (Wald's SPRT on how often a
request is bad), deciding as soon as the evidence suffices: quickly at high traffic, and
only after enough requests at low traffic, where a fixed threshold on a small window
either misses regressions or fails good versions.

A request is *bad* when it failed (``error_rate``), or when it was slower than the gate's
limit ``T = max(maxRatio x active quantile, active quantile + minDelta)`` (latency
builtins). Under H0 (no regression) the candidate's bad share is the active slot's over
the same period, ``p0`` (Laplace's estimate from at least ``MIN_REFERENCE`` active
requests, floored so that a perfect active slot does not make one failure decisive).
Under H1 it is ``p1``: for latency the quantile's own tail (0.5 for the median: the
candidate's median is above the limit), for errors ``max`` (or twice ``p0``). With
``alpha`` the accepted false-positive rate and ``beta`` the accepted miss rate, the
log-likelihood ratio over the step's candidate requests fails the gate at
``log((1 - beta) / alpha)`` and passes it at ``log(beta / (1 - alpha))``; in between it is
Inconclusive (keep baking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gates.metrics.measurement import Phase

QUANTILES = {"p50_latency_ms": 0.5, "p99_latency_ms": 0.99}
#: Requests the active slot needs in the period before it is a reference for the test.
MIN_REFERENCE = 50
FLOOR = {"error_rate": 0.001, "latency": 0.002}


@dataclass(frozen=True)
class SprtResult:
    phase: Phase
    llr: float
    bad: int
    requests: int
    p0: float
    p1: float
    upper: float
    lower: float

    @property
    def message(self) -> str:
        verdict = {Phase.FAILED: "regression", Phase.SUCCESSFUL: "no regression",
                   Phase.INCONCLUSIVE: "not enough evidence yet"}[self.phase]
        return (f"SPRT: {verdict}: {self.bad}/{self.requests} bad, p0 {self.p0:.4g} vs p1 "
                f"{self.p1:.4g}, log-LR {self.llr:.2f} in ({self.lower:.2f}, {self.upper:.2f})")


def sprt(bad: int, requests: int, p0: float, p1: float, alpha: float, beta: float
         ) -> SprtResult:
    """Wald's test of H0: p = p0 against H1: p = p1 (p1 > p0) on ``bad`` of ``requests``."""
    if not (0 < p0 < p1 < 1):
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    upper = math.log((1 - beta) / alpha)
    lower = math.log(beta / (1 - alpha))
    good = requests - bad
    llr = bad * math.log(p1 / p0) + good * math.log((1 - p1) / (1 - p0))
    phase = Phase.FAILED if llr >= upper else (
        Phase.SUCCESSFUL if llr <= lower else Phase.INCONCLUSIVE)
    return SprtResult(phase, llr, bad, requests, p0, p1, upper, lower)


def hypotheses(builtin: str, active_bad_share: float, *, error_max: float | None
               ) -> tuple[float, float]:
    """(p0, p1) for a gate on ``builtin`` given the active slot's bad share."""
    if builtin == "error_rate":
        p0 = max(active_bad_share, FLOOR["error_rate"])
        p1 = max(error_max or 0.0, 2 * p0)
    else:
        p0 = max(active_bad_share, FLOOR["latency"])
        p1 = max(1 - QUANTILES[builtin], 2 * p0)
    return p0, min(p1, 0.999)
