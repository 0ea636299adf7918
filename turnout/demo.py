"""``make demo``: the whole story on the local stack.

v1 serves from blue under live gRPC load; v2 is rolled out (deployed to green, validated,
shifted 10 -> 25 -> 50 -> 100 % under Prometheus gates, promoted); then the faulty v3 is
rolled out and the gates roll it back automatically. A summary follows: per step weights,
gate values (candidate, and the active slot's beside it) and durations, requests sent and
failed, and the time from v3's first failing measurement to 0 % on it.

``make demo-stream`` (``--stream``): the same story for a streaming (decoupled) model,
``examples/models/streamer``, under streaming load (gRPC ModelStreamInfer), gated on time
to first token, time between tokens and failed streams from Envoy's access-log stream; its
v3's first token is 250 ms late.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.assets import EXAMPLE_MODELS, EXAMPLE_POLICIES
from turnout.client import ApiClient
from turnout.controller.state import FINISHED
from turnout.policy import load_file
from turnout.workflow import registry_for

DEFAULT_DIR = Path(".turnout-demo")


@dataclass(frozen=True)
class Scenario:
    """What a demo rolls out, how it loads the stack, and the policies it applies."""

    model: str
    policies: tuple[str, str]  # v2's, v3's (files in examples/)
    clients: int
    rate: float  # requests (or streams) per second in total
    what: str  # how the load is described

    @property
    def versions(self) -> Path:
        return EXAMPLE_MODELS / self.model


UNARY = Scenario("classifier", ("rollout-v2.yaml", "rollout-v3.yaml"), clients=4, rate=200.0,
                 what="gRPC clients")
STREAMING = Scenario("streamer", ("rollout-stream-v2.yaml", "rollout-stream-v3.yaml"),
                     clients=3, rate=30.0, what="gRPC streaming clients (ModelStreamInfer)")


def follow(client: ApiClient, rollout_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """Print the rollout's audit entries as they happen; return the final state."""
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        entries = client.history(rollout=rollout_id)
        for entry in entries[seen:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(entry["at"]))
            if entry["kind"] == "gates":
                values = ", ".join(
                    f"{m['metric']}={m['value']:.3g}" if m["value"] is not None
                    else f"{m['metric']}={m['phase']}"
                    for m in entry["evidence"]["measurements"])
                print(f"  {stamp}   {entry['message']}: {values}", flush=True)
            elif entry["kind"] != "weights":
                print(f"  {stamp} {entry['message']}", flush=True)
        seen = len(entries)
        state = client.rollout()
        if state["id"] == rollout_id and state["phase"] in FINISHED:
            return state
        if time.monotonic() > deadline:
            raise SystemExit(f"rollout still {state['phase']} after {timeout:.0f}s")
        time.sleep(0.5)


def summarize(client: ApiClient, state: dict[str, Any]) -> list[str]:
    history = client.history(rollout=state["id"])
    rounds: dict[int, dict[str, Any]] = {}
    for entry in history:
        if entry["kind"] == "gates":
            rounds[entry["evidence"]["step"]] = entry["evidence"]
    lines = [f"{state['name']}: {state['model']} -> {state['candidate_slot']}: "
             f"{state['phase'].upper()} ({state['reason']})",
             f"  {'step':>4} {'weight':>7} {'ACK ms':>7} {'duration':>9}  last gate values"]
    log = state["steps_log"]
    for index, step in enumerate(log):
        end = log[index + 1]["entered_at"] if index + 1 < len(log) else state["finished_at"]
        gate = rounds.get(step["step"])
        values = ", ".join(_value(m, state["stable_slot"])
                           for m in (gate or {}).get("measurements", [])
                           if m["value"] is not None)
        lines.append(f"  {step['step'] + 1:>4} {step['weight']:>6}% {step['ack_ms']:>7.1f} "
                     f"{end - step['entered_at']:>8.1f}s  {values or '-'}")
    if state.get("first_failure_at") and state.get("rollback_acked_at"):
        lines.append(f"  first failing measurement -> 0% ACKed by every Envoy: "
                     f"{(state['rollback_acked_at'] - state['first_failure_at']) * 1e3:.0f} ms "
                     f"(decision -> ACK "
                     f"{(state['rollback_acked_at'] - state['rollback_decided_at']) * 1e3:.0f} ms)")
    lines.append(f"  total {state['finished_at'] - state['created_at']:.1f}s from apply")
    return lines


def _value(m: dict[str, Any], stable_slot: str) -> str:
    """``ttft 251 (blue 13.2, 19.0x)``: the candidate's figure, then the active slot's."""
    beside = [f"{stable_slot} {m['baseline']:.3g}"] if m.get("baseline") is not None else []
    beside += [f"{m['ratio']:.2f}x"] if m.get("ratio") else []
    return f"{m['metric']} {m['value']:.3g}" + (f" ({', '.join(beside)})" if beside else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--stream", action="store_true",
                        help="the streaming model's story (make demo-stream)")
    parser.add_argument("--clients", type=int, default=None,
                        help="load clients (default 4; 3 with --stream)")
    parser.add_argument("--rate", type=float, default=None,
                        help="requests (streams) per second in total (default 200; 30)")
    args = parser.parse_args(argv)
    scenario = STREAMING if args.stream else UNARY
    clients = args.clients or scenario.clients
    rate = args.rate or scenario.rate
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))  # run `finally`
    marker = args.dir / ".turnout-demo"
    ours = marker.exists() or args.dir == DEFAULT_DIR
    if args.dir.exists() and any(args.dir.iterdir()) and not ours:
        print(f"{args.dir} is not empty and not a demo directory; pick another --dir",
              file=sys.stderr)
        return 2
    if (args.dir / "stack.json").exists():
        stack.down(args.dir)  # a previous demo left running (interrupted)
    shutil.rmtree(args.dir, ignore_errors=True)  # every demo starts from nothing
    args.dir.mkdir(parents=True)
    marker.touch()
    print(f"== 1. local stack in {args.dir} (logs: {args.dir}/logs)", flush=True)
    info = stack.up(args.dir, models=[scenario.versions / "v1"],
                    progress=lambda line: print(line, flush=True))
    summaries: list[str] = []
    try:
        registry = registry_for(args.dir)
        for version in ("v2", "v3"):
            record = registry.push(scenario.versions / version, name=scenario.model,
                                   version=version)
            print(f"pushed {record.ref} ({record.digest[:12]})")
        client = info.client(actor="demo")
        load = LoadGenerator(info.ingress, model=scenario.model, concurrency=clients,
                             rate=rate).start()
        print(f"load: {clients} {scenario.what}, {rate:.0f}/s -> Envoy {info.ingress}",
              flush=True)
        time.sleep(2)
        results = []
        for number, file in zip((2, 3), scenario.policies, strict=True):
            path = EXAMPLE_POLICIES / file
            policy = load_file(path)
            # v3 goes onto the slot v1 is kept warm on after v2's promotion: the demo gives
            # that instant rollback up (`turnout apply --force`, recorded in the audit log).
            force = number > 2
            print(f"\n== {number}. turnout apply examples/{file}{' --force' if force else ''} "
                  f"({policy.model})", flush=True)
            started = client.apply(path.read_text(), f"examples/{file}", force=force)
            results.append(follow(client, started["id"]))
        stats = load.stop()
        gates = policy.gates
        print("\n== summary")
        for state in results:
            summaries.extend(summarize(client, state))
        summaries.append(f"{'streams' if args.stream else 'requests'} through Envoy: sent "
                         f"{stats.sent}, ok {stats.ok}, "
                         f"failed {stats.failed}" + (f" {dict(stats.errors)}" if stats.failed
                                                     else ""))
        source = "Envoy's access-log stream (100 ms flush)" if args.stream else \
            "Prometheus scrape 1s, Envoy stats flush 1s"
        summaries.append(f"intervals: {source}, gates every {gates.interval_s:g}s over "
                         f"windows of up to {gates.window_s:g}s")
        print("\n".join(summaries))
    finally:
        print("\n== stopping the local stack")
        stack.down(args.dir)
    outcome = [r["phase"] for r in results]
    unit = "streams" if args.stream else "requests"
    if outcome != ["promoted", "rolled_back"] or stats.failed:
        print(f"FAILED: expected v2 promoted and v3 rolled back with 0 failed {unit}, "
              f"got {outcome} and {stats.failed} failed", file=sys.stderr)
        return 1
    print(f"v2 promoted, v3 rolled back automatically, zero failed {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
