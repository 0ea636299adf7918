"""The fleet: simulated sidecars (one connection each, from several client processes) on
one or several ADS serving processes sharing one port. Time from a weight decision to
the last stream's ACK, how many streams connected, and the servers' CPU and memory per
stream. Reproduce: ``.venv/bin/python -m bench.fleet --streams 1000 10000 --servers 1 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from bench.common import summary_ms, write_json

CONNECT_TIMEOUT_S = 300.0


@dataclass
class _Proc:
    popen: subprocess.Popen

    def ask(self, command: str) -> dict:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        return json.loads(self.popen.stdout.readline())


def _last_line(path: str) -> dict:
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _spawn(module: str, *args: str, stdin: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], text=True,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, bufsize=1)


def run(streams: int, *, servers: int = 1, clients: int = 4, protocol: str = "sotw",
        pushes: int = 20, progress: bool = True) -> dict[str, object]:
    """One fleet: ``servers`` serving processes, ``clients`` client processes sharing
    ``streams`` sidecars, ``pushes`` weight changes timed to the last ACK."""
    procs: list[_Proc] = []
    client_procs: list[subprocess.Popen] = []
    logs = tempfile.TemporaryDirectory(prefix="turnout-fleet-")
    client_logs = [os.path.join(logs.name, f"client-{i}.jsonl") for i in range(clients)]
    try:
        first = _Proc(_spawn("bench.fleet_server", "0"))
        procs.append(first)
        assert first.popen.stdout is not None
        port = json.loads(first.popen.stdout.readline())["port"]
        for _ in range(servers - 1):
            proc = _Proc(_spawn("bench.fleet_server", str(port)))
            assert proc.popen.stdout is not None
            proc.popen.stdout.readline()
            procs.append(proc)
        base = [p.ask("status") for p in procs]
        per = streams // clients
        for index in range(clients):
            count = per + (streams % clients if index == 0 else 0)
            with open(client_logs[index], "w") as out:
                client_procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.fleet_clients", str(port), str(count),
                     str(index * per * 10), protocol], stdout=out))
        started = time.monotonic()
        last_print = started
        while True:
            status = [p.ask("status") for p in procs]
            in_sync = sum(s["in_sync"] for s in status)
            connected = sum(s["connected"] for s in status)
            waited = time.monotonic() - started
            if in_sync >= streams or waited > CONNECT_TIMEOUT_S:
                break
            if progress and time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print(f"    {connected}/{streams} connected, {in_sync} in sync "
                      f"({waited:.0f} s)", flush=True)
            time.sleep(0.2)
        connect_s = time.monotonic() - started
        time.sleep(0.5)
        status = [p.ask("status") for p in procs]
        cpu0 = sum(s["cpu_s"] for s in status)
        clients0 = [_last_line(path) for path in client_logs]
        seconds, incomplete = [], 0
        for index in range(pushes):
            t0 = time.monotonic()
            for p in procs:
                assert p.popen.stdin is not None
                p.popen.stdin.write(f"push {index}\n")
                p.popen.stdin.flush()
            answers = [json.loads(p.popen.stdout.readline()) for p in procs]  # type: ignore[union-attr]
            seconds.append(time.monotonic() - t0)
            if sum(a["acked"] for a in answers) < in_sync:
                incomplete += 1
        after = [p.ask("status") for p in procs]
        cpu_pushes = sum(s["cpu_s"] for s in after) - cpu0
        time.sleep(0.3)  # the clients' next status line
        clients1 = [_last_line(path) for path in client_logs]
        client_cpu = sum(b.get("cpu_s", 0) - a.get("cpu_s", 0)
                         for a, b in zip(clients0, clients1, strict=True))
        refused = sum(sum(c.get("failures", {}).values()) for c in clients1)
        rss = sum(s["rss_mib"] for s in status) - sum(b["rss_mib"] for b in base)
    finally:
        for client in client_procs:
            client.kill()
            client.wait()
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
            p.popen.wait()
        logs.cleanup()
    result = {
        "streams": streams, "protocol": protocol, "server_processes": servers,
        "client_processes": clients, "connected": connected, "in_sync": in_sync,
        "connect_s": round(connect_s, 1), "pushes": pushes,
        "incomplete_pushes": incomplete, "last_ack": summary_ms(seconds),
        "rss_per_stream_kib": round(rss * 1024 / max(in_sync, 1), 1),
        "cpu_per_push_per_stream_us": round(cpu_pushes / pushes / max(in_sync, 1) * 1e6, 1),
        "cpu_per_push_ms": round(cpu_pushes / pushes * 1e3, 2),
        "client_cpu_per_push_per_stream_us": round(
            client_cpu / pushes / max(in_sync, 1) * 1e6, 1),
        "failed_stream_attempts": refused,
        "cores": os.cpu_count(),
    }
    if progress:
        print(f"  {streams} {protocol} streams on {servers} server process(es): "
              f"{in_sync}/{streams} in sync after {connect_s:.1f} s; last ACK p50 "
              f"{result['last_ack']['p50_ms']} ms over {pushes} pushes; "
              f"{result['rss_per_stream_kib']} KiB, {result['cpu_per_push_per_stream_us']} us "
              "CPU per stream per push", flush=True)
    return result


def matrix(streams: list[int], servers: list[int], protocols: list[str],
           pushes: int | None = None) -> list[dict[str, object]]:
    """Every combination; ``pushes`` None: 50 up to 1,000 streams (enough for a p99),
    20 above (a p50; the table then shows no p99)."""
    return [run(n, servers=s, protocol=p, pushes=pushes or (50 if n <= 1000 else 20))
            for n in streams for s in servers for p in protocols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--protocols", nargs="+", default=["sotw", "delta"],
                        choices=["sotw", "delta"])
    parser.add_argument("--pushes", type=int, default=None,
                        help="per run (default: 50 up to 1,000 streams, else 20)")
    args = parser.parse_args()
    results = matrix(args.streams, args.servers, args.protocols, args.pushes)
    print(f"written {write_json('fleet', {'runs': results})}")


if __name__ == "__main__":
    main()
