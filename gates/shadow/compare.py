"""Comparing the two answers of a shadowed request with the parity check's per-output
rules (integers, booleans and BYTES exactly; floats within the output's tolerance; outputs
marked class scores on the top-1 class of each row), and what a shadow stage saw: requests
compared, disagreement rate, worst difference per output, the first disagreeing requests
(request digest and reason, never payloads), the candidate's latency against the active's
on the same requests, and what could not be compared (truncated, unreadable, unanswered).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gates.shadow.exchange import Exchange
from gates.validation.parity import equal_exact
from gates.validation.settings import ParitySettings
from triton_slots.routing import SHADOW_COPY as COPY
from triton_slots.routing import SHADOW_LIVE as LIVE

EXAMPLES = 5  # disagreeing requests kept, the first ones
LATENCIES = 10_000  # pairs of latencies kept for the ratio (the first ones)


def differences(live: Exchange, copy: Exchange, settings: ParitySettings
                ) -> tuple[list[str], dict[str, float]]:
    """Why the candidate's answer differs from the live one (empty: they agree), and the
    absolute difference per float output."""
    if live.error is not None or copy.error is not None:
        if live.error is None:
            return [f"candidate refused: {copy.error}"], {}
        if copy.error is None:
            return [f"active refused ({live.error}); candidate answered"], {}
        same = live.error.split(":")[0] == copy.error.split(":")[0]
        return ([] if same else [f"both refused, differently: {copy.error}"]), {}
    reasons: list[str] = []
    worst: dict[str, float] = {}
    for name in sorted(set(live.outputs) | set(copy.outputs)):
        got, want = copy.outputs.get(name), live.outputs.get(name)
        if got is None or want is None:
            reasons.append(f"{name}: {'missing' if got is None else 'extra'} output")
            continue
        if got.shape != want.shape:
            reasons.append(f"{name}: shape {list(got.shape)} vs {list(want.shape)}")
            continue
        floating = np.issubdtype(want.dtype, np.floating) and np.issubdtype(
            got.dtype, np.floating)
        if not floating:
            if not equal_exact(got, want):
                reasons.append(f"{name}: values differ (exact)")
            continue
        max_abs, max_rel, class_scores = settings.tolerance(name)
        g, w = got.astype(np.float64), want.astype(np.float64)
        if (np.isnan(g) & ~np.isnan(w)).any():
            reasons.append(f"{name}: NaN where the active has none")
        diff = np.abs(g - w)
        finite = diff[np.isfinite(diff)]
        worst[name] = float(finite.max()) if finite.size else 0.0
        if class_scores and g.ndim >= 1 and g.size:
            rows_g, rows_w = g.reshape(-1, g.shape[-1]), w.reshape(-1, w.shape[-1])
            if (np.argmax(np.nan_to_num(rows_g, nan=-np.inf), axis=1)
                    != np.argmax(rows_w, axis=1)).any():
                reasons.append(f"{name}: top-1 class differs")
            continue
        if worst[name] > max_abs:
            reasons.append(f"{name}: max abs diff {worst[name]:.4g} > {max_abs:g}")
        elif max_rel is not None and finite.size and float(
                (diff / np.maximum(np.abs(w), 1e-6))[np.isfinite(diff)].max()) > max_rel:
            reasons.append(f"{name}: max rel diff > {max_rel:g}")
        elif (np.isinf(g) != np.isinf(w)).any():
            reasons.append(f"{name}: infinity differs")
    return reasons, worst


@dataclass
class ShadowStats:
    """What a shadow stage saw, since it began."""

    compared: int = 0
    disagreed: int = 0
    refused: int = 0  # the candidate refused what the active answered (also disagreed)
    timed_out: int = 0  # no answer from the candidate in time (also disagreed)
    truncated: int = 0  # a body over the tap's buffer: not compared
    undecodable: int = 0  # not a KServe v2 inference exchange: not compared
    mismatched_requests: int = 0  # two sides with one id but other bodies: not compared
    worst: dict[str, float] = field(default_factory=dict)  # max abs diff per float output
    differing: dict[str, int] = field(default_factory=dict)  # disagreeing requests/output
    examples: list[dict[str, str]] = field(default_factory=list)
    live_latency_s: list[float] = field(default_factory=list)
    copy_latency_s: list[float] = field(default_factory=list)

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreed / self.compared if self.compared else None

    @property
    def latency_ratio(self) -> float | None:
        """The candidate's median time to answer over the active's, same requests."""
        if not self.live_latency_s or not self.copy_latency_s:
            return None
        live = statistics.median(self.live_latency_s)
        return statistics.median(self.copy_latency_s) / live if live > 0 else None

    def record(self, live: Exchange, copy: Exchange, settings: ParitySettings) -> None:
        if live.truncated or copy.truncated:
            self.truncated += 1
            return
        if live.undecodable or copy.undecodable:
            self.undecodable += 1
            return
        if live.request_digest != copy.request_digest:
            self.mismatched_requests += 1
            return
        self.compared += 1
        reasons, worst = differences(live, copy, settings)
        for name, value in worst.items():
            self.worst[name] = max(self.worst.get(name, 0.0), value)
        if live.latency_s is not None and copy.latency_s is not None \
                and len(self.live_latency_s) < LATENCIES:
            self.live_latency_s.append(live.latency_s)
            self.copy_latency_s.append(copy.latency_s)
        if reasons:
            self._disagree(live, reasons, refused=copy.error is not None
                           and live.error is None)

    def timeout(self, live: Exchange, after_s: float) -> None:
        """The candidate never answered ``live``'s copy within ``after_s``."""
        self.compared += 1
        self.timed_out += 1
        self._disagree(live, [f"no answer from the candidate within {after_s:g} s"])

    def _disagree(self, live: Exchange, reasons: list[str], *, refused: bool = False) -> None:
        self.disagreed += 1
        self.refused += refused
        for reason in reasons:
            name = reason.split(":")[0]
            self.differing[name] = self.differing.get(name, 0) + 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({"request": live.request_digest, "model": live.model,
                                  "why": "; ".join(reasons)[:300]})

    def snapshot(self) -> ShadowStats:
        """A copy that later comparisons leave alone (for a reader on another thread)."""
        return dataclasses.replace(
            self, worst=dict(self.worst), differing=dict(self.differing),
            examples=list(self.examples), live_latency_s=list(self.live_latency_s),
            copy_latency_s=list(self.copy_latency_s))

    def as_dict(self) -> dict[str, Any]:
        ratio = self.latency_ratio
        return {
            "compared": self.compared, "disagreed": self.disagreed,
            "disagreement_rate": self.disagreement_rate, "refused": self.refused,
            "timed_out": self.timed_out, "truncated": self.truncated,
            "undecodable": self.undecodable, "mismatched_requests": self.mismatched_requests,
            "worst_abs_diff": dict(self.worst), "differing": dict(self.differing),
            "examples": list(self.examples),
            "latency_ratio": None if ratio is None else round(ratio, 3),
        }


class Pairer:
    """Holds each side until its other side arrives (then compared into ``stats``), or
    until ``timeout_s`` (a live answer whose copy never came: the candidate hung). A copy
    whose live side never came is dropped (counted in ``orphans``)."""

    def __init__(self, settings: ParitySettings, *, timeout_s: float = 5.0) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        self.stats = ShadowStats()
        self.orphans = 0
        self._waiting: dict[str, tuple[Exchange, float]] = {}

    def add(self, exchange: Exchange, now: float) -> None:
        other = self._waiting.pop(exchange.request_id, None)
        if other is None or other[0].side == exchange.side:
            self._waiting[exchange.request_id] = (exchange, now)
            return
        live, copy = (exchange, other[0]) if exchange.side == LIVE else (other[0], exchange)
        if copy.side == COPY:
            self.stats.record(live, copy, self.settings)

    def expire(self, now: float) -> None:
        for request_id, (exchange, seen) in list(self._waiting.items()):
            if now - seen >= self.timeout_s:
                del self._waiting[request_id]
                if exchange.side == LIVE:
                    self.stats.timeout(exchange, self.timeout_s)
                else:
                    self.orphans += 1
