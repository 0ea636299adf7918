"""A load generator process: threads sending gRPC inferences for a duration, recording
every request (start time, latency, status) and this process's own CPU time.

Run by bench/load.py as ``python -m bench.loadproc SPEC_JSON OUT_JSON``.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import threading
import time

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from triton_slots.loadgen import fetch_signature, make_inputs


def worker(spec: dict, seed: int, stop_at: float, rows: list, lock: threading.Lock) -> None:
    client = grpcclient.InferenceServerClient(spec["address"])
    headers = spec.get("headers")
    model = spec.get("model", "classifier")
    # Requests built from the model's signature, as Triton (through Envoy) reports it.
    tensor = make_inputs(fetch_signature(client, model, headers), spec["batch"], seed=seed)
    period = spec["threads"] / spec["rate"] if spec.get("rate") else 0.0
    local = []
    for _ in range(3):  # connection set-up, not measured
        with contextlib.suppress(InferenceServerException):
            client.infer(model, tensor, headers=headers)
    next_at = time.time()
    while True:
        if period:
            next_at += period
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)
        started = time.time()
        if started >= stop_at:
            break
        t0 = time.perf_counter()
        try:
            client.infer(model, tensor, headers=headers, client_timeout=30)
            status = "OK"
        except InferenceServerException as exc:
            status = str(exc.status() or "error")
        local.append((started, (time.perf_counter() - t0) * 1e3, status))
    client.close()
    with lock:
        rows.extend(local)


def main() -> None:
    spec = json.loads(sys.argv[1])
    out = sys.argv[2]
    while time.time() < spec["start_at"]:
        time.sleep(0.005)
    stop_at = spec["start_at"] + spec["duration"]
    rows: list = []
    lock = threading.Lock()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=worker, args=(spec, i, stop_at, rows, lock))
               for i in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    with open(out, "w") as handle:
        json.dump({"rows": rows, "cpu_s": cpu, "wall_s": spec["duration"]}, handle)


if __name__ == "__main__":
    main()
