"""Run gRPC load from separate processes and merge what they measured."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.common import percentile


@dataclass
class LoadResult:
    rows: list[tuple[float, float, str]]  # (start time, latency ms, status)
    duration_s: float
    loadgen_cpu_s: float
    processes: int

    @property
    def ok(self) -> int:
        return sum(1 for r in self.rows if r[2] == "OK")

    @property
    def failed(self) -> int:
        return len(self.rows) - self.ok

    def failures(self) -> dict[str, int]:
        return dict(Counter(r[2] for r in self.rows if r[2] != "OK"))

    def latencies(self, rows: list | None = None) -> list[float]:
        return [r[1] for r in (self.rows if rows is None else rows) if r[2] == "OK"]

    def summary(self) -> dict[str, float]:
        lat = self.latencies()
        return {
            "requests": len(self.rows), "failed": self.failed,
            "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
            "throughput_rps": round(self.ok / self.duration_s, 1),
            "loadgen_cpu_cores": round(self.loadgen_cpu_s / self.duration_s, 2),
        }


def run_load(address: str, *, concurrency: int, batch: int = 1, duration: float = 5.0,
             processes: int | None = None, rate: float | None = None,
             headers: dict[str, str] | None = None) -> LoadResult:
    """``concurrency`` client threads spread over ``processes`` separate processes."""
    processes = processes or min(concurrency, 4)
    start_at = time.time() + 1.5  # every process starts its clock together
    with tempfile.TemporaryDirectory(prefix="turnout-load-") as tmp:
        children = []
        for index in range(processes):
            threads = concurrency // processes + (1 if index < concurrency % processes else 0)
            spec = {"address": address, "threads": threads, "batch": batch,
                    "duration": duration, "start_at": start_at, "headers": headers,
                    "rate": rate / processes if rate else None}
            out = Path(tmp) / f"{index}.json"
            children.append((subprocess.Popen(
                [sys.executable, "-m", "bench.loadproc", json.dumps(spec), str(out)]), out))
        rows: list = []
        cpu = 0.0
        for child, out in children:
            if child.wait(timeout=duration + 120) != 0:
                raise RuntimeError(f"load process failed ({child.returncode})")
            data = json.loads(out.read_text())
            rows.extend(tuple(r) for r in data["rows"])
            cpu += data["cpu_s"]
    return LoadResult(rows, duration, cpu, processes)
