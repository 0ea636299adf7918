"""Leader failover: two control-plane replicas on PostgreSQL, one Envoy each, under load.
Each trial kills the leader with SIGKILL and times (a) until the other replica says it
leads, (b) until a weight change sent to the new leader is answered (converged on the
proxies connected then), and (c) until both Envoys serve that change (the dead leader's
Envoy has to reconnect to the survivor first); then the killed replica is started again,
as a follower, for the next trial. ``python -m bench.failover --trials 10``."""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from pathlib import Path

from bench.common import local_stack, write_json
from triton_slots.loadgen import LoadGenerator
from turnout import stack
from turnout.client import ApiClient
from turnout.errors import ApiError
from turnout.proxy import route_weights


def _leading(client: ApiClient) -> bool:
    try:
        return bool(client.status()["replica"]["leading"])
    except (ApiError, OSError):  # a replica being killed or starting
        return False


def run(trials: int = 10) -> dict[str, object]:
    results = []
    with local_stack(replicas=2) as info:
        clients = {r["name"]: ApiClient(r["api_url"], info.token, actor="bench", timeout=5)
                   for r in info.replicas}
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=150).start()
        try:
            for index in range(trials):
                leader = next(r for r in info.replicas if _leading(clients[r["name"]]))
                other = next(r for r in info.replicas if r is not leader)
                record = stack.StackInfo.load(Path(info.directory))
                os.kill(record.processes[leader["process"]], signal.SIGKILL)
                killed = time.monotonic()
                while not _leading(clients[other["name"]]):
                    time.sleep(0.01)
                elected = time.monotonic() - killed
                green = 10 * ((index % 2) + 1)
                pushed = clients[other["name"]].set_traffic(green=green)
                answered = time.monotonic() - killed
                wanted = {"blue": 100 - green, "green": green}
                while any(route_weights(r["envoy_admin"]) != wanted for r in info.replicas):
                    time.sleep(0.01)
                everywhere = time.monotonic() - killed
                results.append({"elected_s": round(elected, 3),
                                "pushed_s": round(answered, 3),
                                "both_envoys_s": round(everywhere, 3),
                                "acked": pushed["push"]["acked"],
                                "converged": pushed["push"]["converged"]})
                print(f"  trial {index + 1}/{trials}: leader {elected:.2f} s, push answered "
                      f"{answered:.2f} s ({pushed['push']['acked']} Envoy(s) connected to "
                      f"it), both Envoys serve it {everywhere:.2f} s after the kill",
                      flush=True)
                restarted = stack.start_control_plane(Path(leader["state_dir"]),
                                                      leader["process"],
                                                      Path(info.directory) / "logs")
                record = stack.StackInfo.load(Path(info.directory))
                record.record(restarted)
                time.sleep(2.0)  # its Envoy's health check sees it again
        finally:
            stats = load.stop()
    elected = [r["elected_s"] for r in results]
    pushed = [r["pushed_s"] for r in results]
    both = [r["both_envoys_s"] for r in results]
    return {
        "trials": results,
        "elected_median_s": round(statistics.median(elected), 3),
        "elected_max_s": max(elected),
        "pushed_median_s": round(statistics.median(pushed), 3),
        "pushed_max_s": max(pushed),
        "both_envoys_median_s": round(statistics.median(both), 3),
        "both_envoys_max_s": max(both),
        "all_converged": all(r["converged"] for r in results),
        "requests": stats.sent, "failed": stats.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    print(f"written {write_json('failover', run(args.trials))}")


if __name__ == "__main__":
    main()
