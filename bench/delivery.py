"""Deploy throughput with nothing shared on disk: the repository API (config and files in
the gRPC load request) against the shared-repository copy (the baseline, same run, same
Triton server), for artifacts of 1, 50 and 200 MiB. Each deploy runs in a fresh process,
whose peak RSS growth is the control plane's memory cost. ``python -m bench.delivery``"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import write_json

SIZES_MIB = (1, 50, 200)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one(mode: str, registry_root: str, name: str, endpoint: dict, repository: str,
         answer) -> None:  # type: ignore[no-untyped-def]
    """In a fresh process: deploy ``name:v1`` once; send (seconds, RSS growth MiB)."""
    from triton_slots.deploy import deploy
    from triton_slots.registry import LocalRegistry
    from triton_slots.slot import Endpoint

    registry = LocalRegistry(Path(registry_root))
    before = _rss_mib()
    started = time.monotonic()
    deploy(registry, name, "v1", slot="green", endpoints=[Endpoint.from_dict(endpoint)],
           repository=Path(repository) if mode == "shared" else None, timeout=600)
    answer.send((time.monotonic() - started, _rss_mib() - before))


def _measure(mode: str, registry_root: Path, name: str, endpoint: dict,
             repository: Path) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_one, args=(mode, str(registry_root), name, endpoint,
                                                 str(repository), send))
    process.start()
    result = receive.recv()
    process.join()
    return result


def run(trials: int = 3, sizes: tuple[int, ...] = SIZES_MIB) -> dict:
    from tests.zoo import write_model
    from triton_slots.admin import TritonAdmin
    from triton_slots.launcher import TritonServer, prepare_backends
    from triton_slots.registry import LocalRegistry

    root = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    backends = prepare_backends(root / "backends")
    (root / "empty").mkdir()
    server = TritonServer.start(name="bench-delivery", model_repository=root / "empty",
                                backends=backends, log_path=root / "triton.log")
    rows = []
    try:
        server.wait_ready()
        registry = LocalRegistry(root / "registry")
        for size in sizes:
            samples: dict[str, list[tuple[float, float]]] = {"shared": [], "api": []}
            for trial in range(trials):
                for mode in ("shared", "api"):  # alternate: neither always goes first
                    name = f"m{size}_{trial}_{mode}"
                    model = write_model(root / "models" / name, "pair", name=name)
                    (model / "1" / "weights.bin").write_bytes(os.urandom(size << 20))
                    registry.push(model, name=name, version="v1")
                    seconds, rss = _measure(mode, root / "registry", name,
                                            server.endpoint.as_dict(), root / "empty")
                    samples[mode].append((seconds, rss))
                    TritonAdmin(server.endpoint)._call(
                        "POST", f"/v2/repository/models/{name}/unload", {})
                    print(f"  {size} MiB {mode}: {seconds:.2f} s, RSS +{rss:.0f} MiB",
                          flush=True)
            api_s = statistics.median(s for s, _ in samples["api"])
            shared_s = statistics.median(s for s, _ in samples["shared"])
            rows.append({"size_mib": size, "trials": trials,
                         "api_s": round(api_s, 3), "shared_s": round(shared_s, 3),
                         "api_mib_per_s": round(size / api_s, 1),
                         "shared_mib_per_s": round(size / shared_s, 1),
                         "ratio": round(api_s / shared_s, 2),
                         "api_rss_mib": round(max(r for _, r in samples["api"]), 0),
                         "shared_rss_mib": round(max(r for _, r in samples["shared"]), 0)})
    finally:
        server.stop()
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    write_json("delivery", run(args.trials))


if __name__ == "__main__":
    main()
