"""Streaming (decoupled) models on the local stack, one run, two parts:

1. **Envoy's cost on a stream**: time to first token (TTFT) and between tokens (ITL) seen
   by a client, direct to Triton and through Envoy, in alternating rounds of the same
   example streamer (8 tokens, 2 ms apart, first token at once), one stream at a time.
2. **Time to rollback on a TTFT regression at 10 %**: a streamer version whose first
   token becomes 250 ms late at a known instant (the benchmark creates its fault flag
   file), rolled out and baking at 10 % under streaming load (3 clients, 30 streams/s)
   with the token-level gates of ``examples/rollout-stream-v2.yaml``. Each trial is
   classified as in ``bench.rollback_time``: ``detected``, ``false_positive`` (rolled back
   before the fault: never counted as a fast rollback) or ``missed``.

Reproduce: ``.venv/bin/python -m bench.streams --trials 10 --streams 300``; raw JSON in
``bench/out/streams.json``."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from bench.common import local_stack, summary_ms, write_json
from bench.policies import FINISHED, policy
from bench.rollback_time import classify, summarise
from bench.switching import wait_finished
from triton_slots.loadgen import LoadGenerator, fetch_signature
from triton_slots.streaming import stream_infer
from triton_slots.tensors import random_inputs
from turnout.assets import EXAMPLE_MODELS
from turnout.client import ApiClient
from turnout.workflow import registry_for

STREAMER = EXAMPLE_MODELS / "streamer"
TOKEN_GATES = (
    "\n      - {name: ttft, builtin: ttft_p99_ms, max: 200, maxRatio: 3, minDelta: 100, "
    "source: envoy}"
    "\n      - {name: itl, builtin: itl_p99_ms, maxRatio: 3, minDelta: 50, source: envoy}"
    "\n      - {name: stream-errors, builtin: stream_error_rate, max: 0.01, source: envoy}")


def flagged_streamer(workdir: Path, flag: Path) -> Path:
    """The streamer's v2 whose first token is 250 ms late while ``flag`` exists."""
    model = workdir / "streamer-flag"
    shutil.copytree(STREAMER / "v2", model, symlinks=False)
    with open(model / "config.pbtxt", "a") as config:
        config.write(f"""
parameters [
  {{ key: "fault_first_token_delay_s" value: {{ string_value: "0.25" }} }},
  {{ key: "fault_flag_file" value: {{ string_value: "{flag}" }} }}
]
""")
    return model


def overhead(direct: str, ingress: str, streams: int, rounds: int = 3) -> dict[str, object]:
    """TTFT and ITL per target, alternating ``rounds`` times, ``streams`` in all each."""
    times: dict[str, dict[str, list[float]]] = {t: {"ttft": [], "itl": []}
                                                for t in ("direct", "envoy")}
    clients = {"direct": grpcclient.InferenceServerClient(direct),
               "envoy": grpcclient.InferenceServerClient(ingress)}
    try:
        sig = fetch_signature(clients["direct"], "streamer")
        arrays = random_inputs(sig, 1, seed=0)  # the same request on both paths
        for client in clients.values():  # warm both paths up first
            for _ in range(10):
                stream_infer(client, sig, arrays)
        for _ in range(rounds):
            for target, client in clients.items():
                for _ in range(streams // rounds):
                    answer = stream_infer(client, sig, arrays)
                    assert answer.first_s is not None
                    times[target]["ttft"].append(answer.first_s)
                    times[target]["itl"].extend(answer.gaps_s)
    finally:
        for client in clients.values():
            client.close()
    result: dict[str, object] = {t: {k: summary_ms(v) for k, v in kinds.items()}
                                 for t, kinds in times.items()}
    for kind in ("ttft", "itl"):
        for q in ("p50", "p99"):
            direct_ms = result["direct"][kind][f"{q}_ms"]  # type: ignore[index]
            envoy_ms = result["envoy"][kind][f"{q}_ms"]  # type: ignore[index]
            result[f"{kind}_{q}_added_ms"] = round(envoy_ms - direct_ms, 3)
    print(f"  Envoy's cost: {({k: v for k, v in result.items() if k.endswith('added_ms')})}",
          flush=True)
    return result


def rollback_trials(info, trials: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        flag = Path(tmp) / "fault-on"
        model = flagged_streamer(Path(tmp), flag)
        registry = registry_for(info.directory_path)
        client = ApiClient(info.api_url, info.token, actor="bench")
        load = LoadGenerator(info.ingress, model="streamer", concurrency=3, rate=30).start()
        try:
            time.sleep(2)
            for trial in range(trials):
                version = f"flag-{trial + 1}"
                registry.push(model, name="streamer", version=version)
                started = client.apply(policy(
                    f"streamer:{version}", name=f"late-{trial + 1}",
                    steps=[(10, "600s"), (100, "1s")], interval="500ms", window="3s",
                    metrics=TOKEN_GATES, consecutive_error_limit=1000), "bench")
                while client.rollout()["phase"] not in ("baking", *FINISHED):
                    time.sleep(0.05)
                time.sleep(5)  # healthy baking first: rounds pass at 10 %
                fault_at = time.time()
                flag.touch()
                done = wait_finished(client, started["id"])
                flag.unlink()
                row = classify(done, client.history(rollout=done["id"]), fault_at)
                print(f"  trial {trial + 1}: {row}", flush=True)
                rows.append(row)
        finally:
            stats = load.stop()
    config = {"name": "token gates on the access-log stream", "interval": "500ms",
              "window": "3s", "fault": "first token +250 ms at 10 %"}
    return {**summarise(config, rows),
            "load": {"streams": stats.sent, "failed": stats.failed,
                     "errors": dict(stats.errors)}}


def run(trials: int, streams: int) -> dict[str, object]:
    with local_stack(models=[STREAMER / "v1"]) as info:
        print("== Envoy's cost on a stream", flush=True)
        cost = overhead(_blue_endpoint(info), info.ingress, streams)
        print("== time to rollback on a TTFT regression", flush=True)
        rollback = rollback_trials(info, trials)
    return {"overhead": cost, "rollback": rollback, "streams_per_target": streams}


def _blue_endpoint(info) -> str:  # type: ignore[no-untyped-def]
    status = ApiClient(info.api_url, info.token).status()
    return status["slots"]["blue"][0]["endpoint"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--streams", type=int, default=300, help="per target")
    args = parser.parse_args()
    print(f"written {write_json('streams', run(args.trials, args.streams))}")


if __name__ == "__main__":
    main()
