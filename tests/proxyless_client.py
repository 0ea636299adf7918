"""A proxyless gRPC client process for tests and benches: KServe v2 inference to
``xds:///<target>`` with gRPC's own xDS client (``GRPC_XDS_BOOTSTRAP`` must be set).

``python -m tests.proxyless_client SPEC_JSON``: ``{"target", "model", "count" |
"until" (a file whose appearance stops the load), "concurrency", "headers"}``; prints
``{"ok", "failed", "errors", "p50_ms"}`` as JSON. A separate process because gRPC keeps
one xDS client per process for its whole life."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from triton_slots.loadgen import LoadGenerator, send


def main() -> None:
    spec = json.loads(sys.argv[1])
    options = {"model": spec["model"], "concurrency": spec.get("concurrency", 2),
               "headers": spec.get("headers"), "keep_latencies": True}
    if "count" in spec:
        stats = send(spec["target"], spec["count"], **options)
    else:
        load = LoadGenerator(spec["target"], **options).start()
        stop = Path(spec["until"])
        while not stop.exists():
            time.sleep(0.05)
        stats = load.stop()
    print(json.dumps({"ok": stats.ok, "failed": stats.failed, "errors": dict(stats.errors),
                      "p50_ms": stats.percentile(50)}))


if __name__ == "__main__":
    main()
