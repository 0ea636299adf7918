"""Convergence of a weight push to one real Envoy, under inference load.

Time is measured by the control plane: from publishing the snapshot to receiving the
Envoy's ACK of the new route table. Reproduce: ``.venv/bin/python -m bench.convergence``.
"""

from __future__ import annotations

import argparse
import time

from bench.common import local_stack, summary_ms, write_json
from turnout.client import ApiClient
from turnout.loadgen import LoadGenerator


def run(pushes: int, clients: int) -> dict[str, object]:
    with local_stack() as info:
        api = ApiClient(info.api_url, info.token)
        load = LoadGenerator(info.ingress, concurrency=clients).start()
        seconds: list[float] = []
        not_converged = 0
        try:
            time.sleep(0.5)
            for i in range(pushes):
                green = (i * 7) % 101  # a different weight each push
                push = api.set_traffic(green=green)["push"]
                if push["converged"]:
                    seconds.append(push["seconds"])
                else:
                    not_converged += 1
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{pushes} pushes", flush=True)
        finally:
            stats = load.stop()
    return {
        "pushes": pushes,
        "not_converged": not_converged,
        "convergence": summary_ms(seconds),
        "load": {"clients": clients, "sent": stats.sent, "failed": stats.failed,
                 "errors": dict(stats.errors)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    result = run(args.pushes, args.clients)
    path = write_json("convergence_one_envoy", result)
    print(result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
