"""Long-lived streams after a weight change: how long until the old slot serves none of
them, and which requests failed meanwhile (issue 21, item 3).

Clients each hold one gRPC ``ModelStreamInfer`` stream open through the ingress and send
requests on it one after another (a short pause between), as chat-style clients do. Two
kinds: **renewing** clients (:class:`~triton_slots.streaming.LongStream` reopening at a
request boundary after half the ingress's ``stream_max_age_s``) and **plain** ones that
never reopen by themselves (the ingress's bound ends their stream, mid-response or not).
The traffic moves from one slot to the other (a promotion's last step), then back (a
rollback); the move time is from the weight change's return (every proxy ACKed) until the
old slot's cluster in Envoy has no active stream (``upstream_rq_active``, read every 50 ms
from Envoy's admin). Only these clients send traffic during the measurement.

Reproduce: ``.venv/bin/python -m bench.stream_move --max-age 10 --clients 16 --trials 3``; raw JSON
in ``bench/out/stream_move.json``."""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from triton_slots.loadgen import fetch_signature
from triton_slots.routing import cluster_name
from triton_slots.streaming import LongStream, StreamCounts, StreamError
from turnout.client import ApiClient
from turnout.proxy import admin_stats


def active_streams(envoy_admin: str, slot: str) -> int:
    """Requests (streams) open now on ``slot``'s gRPC cluster, in one Envoy."""
    name = f"cluster.{cluster_name(slot)}.upstream_rq_active"
    return admin_stats(envoy_admin, name).get(name, 0)


@dataclass
class Holder:
    """One client holding a stream: its counts and the errors of its failed requests."""

    renewing: bool
    counts: StreamCounts = field(default_factory=StreamCounts)
    errors: list[str] = field(default_factory=list)


class StreamHolders:
    """``renewing`` + ``plain`` clients, each one thread holding one stream on ``model``."""

    def __init__(self, ingress: str, model: str, arrays: dict[str, np.ndarray], *,
                 renewing: int, plain: int, renew_after_s: float,
                 pause_s: float = 0.02) -> None:
        self.ingress, self.model, self.arrays = ingress, model, arrays
        self.renew_after_s, self.pause_s = renew_after_s, pause_s
        self.holders = [Holder(True) for _ in range(renewing)] + \
            [Holder(False) for _ in range(plain)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._hold, args=(h,), daemon=True)
                         for h in self.holders]

    def start(self) -> StreamHolders:
        for thread in self._threads:
            thread.start()
        return self

    def _hold(self, holder: Holder) -> None:
        client = grpcclient.InferenceServerClient(self.ingress)
        try:
            stream = LongStream(client, fetch_signature(client, self.model),
                                renew_after_s=self.renew_after_s if holder.renewing else None)
            holder.counts = stream.counts
            while not self._stop.is_set():
                try:
                    stream.infer(self.arrays)
                except StreamError as exc:
                    holder.errors.append(str(exc)[:200])
                self._stop.wait(self.pause_s)
            stream.close()
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for kind, renewing in (("renewing", True), ("plain", False)):
            group = [h for h in self.holders if h.renewing is renewing]
            if not group:
                continue
            totals = {k: sum(getattr(h.counts, k) for h in group)
                      for k in asdict(StreamCounts())}
            out[kind] = {"clients": len(group), **totals,
                         "errors": [e for h in group for e in h.errors][:5]}
        return out


def wait_empty(envoy_admin: str, slot: str, timeout_s: float) -> float | None:
    """Seconds until ``slot`` has no open stream in Envoy; None if it still has one."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if active_streams(envoy_admin, slot) == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def move(api: ApiClient, envoy_admin: str, *, to_green: bool, timeout_s: float
         ) -> dict[str, object]:
    """Move every weight to one slot; how long the other keeps an open stream."""
    old = "blue" if to_green else "green"
    held = active_streams(envoy_admin, old)
    api.set_traffic(green=100 if to_green else 0)
    seconds = wait_empty(envoy_admin, old, timeout_s)
    return {"from": old, "streams_before": held,
            "seconds": None if seconds is None else round(seconds, 3)}


def measure(info, model: str, arrays: dict[str, np.ndarray], *, max_age_s: float,  # type: ignore[no-untyped-def]
            renewing: int, plain: int) -> dict[str, object]:
    """One promotion-like and one rollback-like move under held streams."""
    api = ApiClient(info.api_url, info.token, actor="bench")
    api.set_traffic(green=0)
    holders = StreamHolders(info.ingress, model, arrays, renewing=renewing, plain=plain,
                            renew_after_s=max_age_s / 2).start()
    try:
        deadline = time.monotonic() + 30
        while active_streams(info.envoy_admin, "blue") < renewing + plain:
            if time.monotonic() > deadline:
                raise RuntimeError("the clients' streams never all opened on blue")
            time.sleep(0.05)
        time.sleep(1.0)
        promotion = move(api, info.envoy_admin, to_green=True, timeout_s=max_age_s * 3)
        time.sleep(1.0)
        rollback = move(api, info.envoy_admin, to_green=False, timeout_s=max_age_s * 3)
        time.sleep(1.0)
    finally:
        holders.stop()
    return {"max_age_s": max_age_s, "renew_after_s": max_age_s / 2,
            "promotion": promotion, "rollback": rollback, **holders.summary()}


def run(max_age_s: float = 10.0, clients: int = 16, trials: int = 3) -> dict[str, object]:
    from bench.common import local_stack
    from turnout.assets import EXAMPLE_MODELS

    arrays = {"PROMPT": np.array([b"a question"], dtype=np.object_),
              "MAX_TOKENS": np.array([8], dtype=np.int32)}
    runs: dict[str, list[dict[str, Any]]] = {"renewing": [], "plain": []}
    with local_stack(models=[EXAMPLE_MODELS / "streamer" / "v1"],
                     stream_max_age_s=max_age_s) as info:
        for trial in range(trials):
            for kind, renewing, plain in (("renewing", clients, 0), ("plain", 0, clients)):
                print(f"== trial {trial + 1}/{trials}: {clients} {kind} clients, "
                      f"stream_max_age_s {max_age_s:g}", flush=True)
                runs[kind].append(measure(info, "streamer", arrays, max_age_s=max_age_s,
                                          renewing=renewing, plain=plain))
                print(f"  {json.dumps(runs[kind][-1])}", flush=True)
    summary = {kind: summarise(rows, kind) for kind, rows in runs.items()}
    print(json.dumps(summary, indent=1), flush=True)
    return {"max_age_s": max_age_s, "clients": clients, "summary": summary, "trials": runs}


def main() -> None:
    from bench.common import write_json

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-age", type=float, default=10.0,
                        help="the stack's stream_max_age_s for the run")
    parser.add_argument("--clients", type=int, default=16, help="per kind")
    parser.add_argument("--trials", type=int, default=3, help="per kind")
    args = parser.parse_args()
    print(f"written {write_json('stream_move', run(args.max_age, args.clients, args.trials))}")


def summarise(rows: list[dict[str, Any]], kind: str) -> dict[str, object]:
    """Move times (max over the clients, per move) and failed requests over all trials."""
    seconds = [row[move]["seconds"] for row in rows for move in ("promotion", "rollback")]
    moved = [s for s in seconds if s is not None]
    return {"moves": len(seconds), "never_moved": len(seconds) - len(moved),
            "median_s": round(statistics.median(moved), 3) if moved else None,
            "max_s": max(moved) if moved else None,
            "requests": sum(row[kind]["requests"] for row in rows),
            "failed": sum(row[kind]["cut"] for row in rows),
            "ended_between_requests": sum(row[kind]["ended_idle"] for row in rows)}


if __name__ == "__main__":
    main()


if __name__ == "__main__":
    main()
