"""Fleet convergence with simulated ADS clients in other processes: time from a weight
decision to the last stream's ACK, and the control plane's CPU and memory per stream.
Reproduce: ``.venv/bin/python -m bench.fleet --streams 100 1000 10000``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import summary_ms, write_json


def run(streams: int, pushes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="turnout-fleet-") as tmp:
        port_file, out = Path(tmp) / "port", Path(tmp) / "out.json"
        server = subprocess.Popen([sys.executable, "-m", "bench.fleet_server", str(port_file),
                                   str(streams), str(pushes), str(out)])
        clients: list[subprocess.Popen] = []
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            port = port_file.read_text()
            processes = 1  # see bench/NOTES.md: several client processes stall
            per = streams // processes
            for index in range(processes):
                count = per + (streams % processes if index == 0 else 0)
                clients.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.fleet_clients", port, str(count),
                     str(index * per * 10)]))
            if server.wait(timeout=900) != 0:
                raise RuntimeError("fleet server failed")
            data = json.loads(out.read_text())
        finally:
            for client in clients:
                client.kill()
                client.wait()
            if server.poll() is None:
                server.kill()
    seconds = [p["seconds"] for p in data["pushes"]]
    incomplete = sum(1 for p in data["pushes"] if p["acked"] < streams)
    result = {
        "streams": streams,
        "client_processes": 1,
        "pushes": pushes,
        "incomplete_pushes": incomplete,
        "last_ack": summary_ms(seconds),
        "connect_s": round(data["connect_s"], 2),
        "rss_per_stream_kib": round((data["rss_connected_mib"] - data["rss_before_mib"])
                                    * 1024 / streams, 1),
        "cpu_per_push_per_stream_us": round(data["cpu_pushes_s"] / pushes / streams * 1e6, 1),
        "cpu_per_push_ms": round(data["cpu_pushes_s"] / pushes * 1e3, 2),
    }
    print(f"  {streams} streams: last ACK p50 {result['last_ack']['p50_ms']} ms, "
          f"p99 {result['last_ack']['p99_ms']} ms; {result['rss_per_stream_kib']} KiB and "
          f"{result['cpu_per_push_per_stream_us']} us CPU per stream per push", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args()
    results = [run(n, args.pushes) for n in args.streams]
    print(f"written {write_json('fleet', {'runs': results})}")


if __name__ == "__main__":
    main()
