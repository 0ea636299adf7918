"""Load from a process of its own: what a proxyless gRPC client (``xds:///<target>``,
gRPC's own xDS client, ``GRPC_XDS_BOOTSTRAP`` set) needs, since gRPC keeps one xDS client
per process for that process's whole life.

``python -m triton_slots.loadrun SPEC_JSON``: ``{"target", "model", "count" | "until" (a
file whose appearance stops the load), "concurrency", "headers", "warmup"}``; prints
``{"ok", "failed", "errors", "p50_ms", "p99_ms"}`` as one JSON line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from triton_slots.loadgen import LoadGenerator, send


def main() -> None:
    spec = json.loads(sys.argv[1])
    options = {"model": spec["model"], "concurrency": spec.get("concurrency", 2),
               "headers": spec.get("headers"), "keep_latencies": True,
               "warmup": spec.get("warmup", 0)}
    if "count" in spec:
        stats = send(spec["target"], spec["count"], **options)
    else:
        load = LoadGenerator(spec["target"], **options).start()
        stop = Path(spec["until"])
        while not stop.exists():
            time.sleep(0.05)
        stats = load.stop()
    print(json.dumps({"ok": stats.ok, "failed": stats.failed, "errors": dict(stats.errors),
                      "p50_ms": stats.percentile(50), "p99_ms": stats.percentile(99)}))


if __name__ == "__main__":
    main()
