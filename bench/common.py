"""Shared helpers for benchmarks: stats, output files, and a throwaway local stack."""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from turnout import stack

ROOT_DIR = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


def write_json(name: str, data: object) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    if isinstance(data, dict):  # each section of BENCHMARKS.md says when it was measured
        data = {**data, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path.write_text(json.dumps(data, indent=2))
    return path


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`: the stack is stopped


@contextlib.contextmanager
def local_stack(**options: object) -> Iterator[stack.StackInfo]:
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="turnout-bench-") as tmp:
        info = stack.up(Path(tmp), progress=lambda line: print(line, flush=True), **options)
        try:
            yield info
        finally:
            stack.down(Path(tmp))
