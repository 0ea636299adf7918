"""Per-slot sliding windows of request outcomes in fixed, bounded memory.

Each slot keeps a ring of ``horizon_s / bucket_s`` time buckets (100 ms each by default);
a bucket holds the request count, the error count, the count of client errors (apart: in
neither of the others) and a latency histogram over fixed, log-spaced bounds; and, for
streams (one request answered by many responses: decoupled models), their count, errors
and responses, a histogram of time to first response (TTFT) and one of the mean time
between responses of each stream (inter-token latency, ITL: (duration - TTFT) /
(responses - 1)). A row is reused for a newer bucket only: entries older than the bucket a
row holds are dropped and counted, never allowed to reset it. Memory per slot is the same at
2 or 20,000 requests/s: ``buckets x width`` int64 (``bytes_per_slot``). Quantiles are read
from the merged histogram, interpolated inside the bucket that holds them (as Prometheus'
``histogram_quantile`` does).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

#: Latency bucket upper bounds (ms): 0.1 ms to ~60 s, 8 per decade.
BOUNDS_MS = np.array([0.1 * 10 ** (i / 8) for i in range(46)])
_COUNT, _ERRORS, _CLIENT, _STREAMS, _STREAM_ERRORS, _RESPONSES = range(6)
_BINS = len(BOUNDS_MS) + 1
#: Where each histogram's columns start.
HISTOGRAMS = {"latency": 6, "ttft": 6 + _BINS, "itl": 6 + 2 * _BINS}
_HIST = HISTOGRAMS["latency"]


class SlotWindows:
    """Thread-safe: the access-log stream records from the event loop, gates read from a
    worker thread."""

    def __init__(self, *, bucket_s: float = 0.1, horizon_s: float = 120.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.bucket_s = bucket_s
        self.size = math.ceil(horizon_s / bucket_s)
        # six counts, then one column per bucket of each histogram
        self.width = 6 + len(HISTOGRAMS) * _BINS
        self.clock = clock
        self._rings: dict[str, np.ndarray] = {}
        self._stamps: dict[str, np.ndarray] = {}  # the bucket index each row holds
        self._lock = threading.Lock()

    @property
    def bytes_per_slot(self) -> int:
        return self.size * self.width * 8 + self.size * 8

    def _ring(self, slot: str) -> tuple[np.ndarray, np.ndarray]:
        ring = self._rings.get(slot)
        if ring is None:
            ring = self._rings[slot] = np.zeros((self.size, self.width), np.int64)
            self._stamps[slot] = np.full(self.size, -1, np.int64)
        return ring, self._stamps[slot]

    def record(self, slot: str, *, at: float, latency_ms: float, error: bool) -> int:
        """One request; returns 1 if dropped (older than its row's bucket), else 0."""
        return self.record_many(slot, at=np.array([at]), latency_ms=np.array([latency_ms]),
                                error=np.array([error]))

    def record_many(self, slot: str, *, at: np.ndarray, latency_ms: np.ndarray,
                    error: np.ndarray, client: np.ndarray | None = None,
                    responses: np.ndarray | None = None,
                    ttft_ms: np.ndarray | None = None) -> int:
        """Many requests at once (simulations, batches); same result as ``record`` each.
        ``client`` marks client errors: counted apart, in neither the requests, the errors
        nor the latency. ``responses`` (per request; 0: not a stream) and ``ttft_ms`` (NaN:
        unknown) describe streams. Returns how many were dropped as older than their row's
        bucket."""
        indexes = (at // self.bucket_s).astype(np.int64)
        buckets = np.searchsorted(BOUNDS_MS, latency_ms)  # b: BOUNDS_MS[b-1] < ms <= BOUNDS_MS[b]
        served = np.ones(len(indexes), bool) if client is None else ~client.astype(bool)
        count = np.zeros(len(indexes), np.int64) if responses is None \
            else responses.astype(np.int64)
        first = np.full(len(indexes), np.nan) if ttft_ms is None else ttft_ms.astype(float)
        streams = count > 0
        known = streams & ~np.isnan(first)
        ttft_buckets = np.searchsorted(BOUNDS_MS, np.nan_to_num(first))
        gaps = known & (count > 1)
        itl = (latency_ms - np.nan_to_num(first)) / np.maximum(count - 1, 1)
        itl_buckets = np.searchsorted(BOUNDS_MS, np.maximum(itl, 0.0))
        dropped = 0
        with self._lock:
            ring, stamps = self._ring(slot)
            for index in np.unique(indexes):
                row = int(index) % self.size
                chosen = indexes == index
                if stamps[row] > index:  # the row holds a newer bucket: never reset it
                    dropped += int(chosen.sum())
                    continue
                if stamps[row] != index:
                    ring[row] = 0
                    stamps[row] = index
                counted = chosen & served
                ring[row, _COUNT] += int(counted.sum())
                ring[row, _ERRORS] += int(error[counted].sum())
                ring[row, _CLIENT] += int((chosen & ~served).sum())
                np.add.at(ring[row], _HIST + buckets[counted], 1)
                streamed = counted & streams
                ring[row, _STREAMS] += int(streamed.sum())
                ring[row, _STREAM_ERRORS] += int(error[streamed].sum())
                ring[row, _RESPONSES] += int(count[streamed].sum())
                np.add.at(ring[row], HISTOGRAMS["ttft"] + ttft_buckets[counted & known], 1)
                np.add.at(ring[row], HISTOGRAMS["itl"] + itl_buckets[counted & gaps], 1)
        return dropped

    def exceeding(self, slot: str, threshold_ms: float, window_s: float,
                  now: float | None = None) -> tuple[int, int]:
        """(requests slower than ``threshold_ms``, requests) in the window, counting whole
        histogram buckets above the bucket holding the threshold."""
        total = self._window(slot, window_s, now)
        hist = total[_HIST:_HIST + _BINS]
        first = int(np.searchsorted(BOUNDS_MS, threshold_ms)) + 1
        return int(hist[first:].sum()), int(total[_COUNT])

    def _window(self, slot: str, window_s: float, now: float | None) -> np.ndarray:
        """The sum of the buckets in the last ``window_s`` (the current one included)."""
        now = self.clock() if now is None else now
        last = int(now // self.bucket_s)
        first = last - max(1, round(window_s / self.bucket_s)) + 1
        with self._lock:
            if slot not in self._rings:
                return np.zeros(self.width, np.int64)
            ring, stamps = self._rings[slot], self._stamps[slot]
            live = (stamps >= first) & (stamps <= last)
            return ring[live].sum(axis=0)

    def requests(self, slot: str, window_s: float, now: float | None = None) -> int:
        return int(self._window(slot, window_s, now)[_COUNT])

    def client_errors(self, slot: str, window_s: float, now: float | None = None) -> int:
        """Requests that ended in a client-caused status in the window (not in ``requests``)."""
        return int(self._window(slot, window_s, now)[_CLIENT])

    def errors(self, slot: str, window_s: float, now: float | None = None) -> tuple[int, int]:
        """(errors, requests) in the window."""
        total = self._window(slot, window_s, now)
        return int(total[_ERRORS]), int(total[_COUNT])

    def streams(self, slot: str, window_s: float, now: float | None = None
                ) -> tuple[int, int, int]:
        """(stream errors, streams, responses) in the window."""
        total = self._window(slot, window_s, now)
        return int(total[_STREAM_ERRORS]), int(total[_STREAMS]), int(total[_RESPONSES])

    def quantile(self, slot: str, q: float, window_s: float, now: float | None = None,
                 *, of: str = "latency") -> float:
        """The ``q`` quantile (ms) in the window of request latency, or of streams' time
        to first response (``of="ttft"``) or time between responses (``of="itl"``); NaN
        when there is nothing to rank."""
        start = HISTOGRAMS[of]
        hist = self._window(slot, window_s, now)[start:start + _BINS]
        total = int(hist.sum())
        if total == 0:
            return math.nan
        rank = q * total
        cumulative = np.cumsum(hist)
        # The first bucket whose cumulative count reaches the rank (for q = 0, the first
        # bucket holding a request: its lower bound is the answer).
        i = int(np.searchsorted(cumulative, rank, side="left" if rank > 0 else "right"))
        if i >= len(BOUNDS_MS):  # beyond the last bound: report the last bound
            return float(BOUNDS_MS[-1])
        lower = 0.0 if i == 0 else float(BOUNDS_MS[i - 1])
        below = 0 if i == 0 else int(cumulative[i - 1])
        fraction = (rank - below) / int(hist[i])  # hist[i] > 0: it reached the rank
        return lower + (float(BOUNDS_MS[i]) - lower) * fraction
