"""``make chaos``: break one thing at a time under steady load through Envoy and record
what happened: requests sent and failed, time to detect, time to recover, the final
rollout phase and weights, and whether the audit log kept every entry.

Each case runs on a fresh local stack (two Triton servers per slot, the control plane as
its own process, Envoy, Prometheus). Results: ``bench/out/chaos.json`` and
``RELIABILITY.md`` (linked from BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import OUT, ROOT_DIR, write_json
from bench.partitions import CASES as PARTITIONS
from bench.partitions import PartitionRow
from bench.policies import ERROR_RATE
from bench.policies import policy as rollout_policy
from triton_slots.loadgen import LoadGenerator, send
from turnout import stack
from turnout.client import ApiClient
from turnout.errors import ApiError
from turnout.proxy import DRAIN_TIME_S, PARENT_SHUTDOWN_S, EnvoyProxy
from turnout.store import SqliteStore as Store
from turnout.workflow import registry_for

EXAMPLES = ROOT_DIR / "examples" / "models" / "classifier"
FINISHED = {"promoted", "rolled_back", "aborted", "failed"}


@dataclass
class Row:
    case: str
    sent: int = 0
    failed: int = 0
    detect_s: float | None = None
    recover_s: float | None = None
    phase: str = "-"
    weights: str = ""
    audit_kept: bool = True
    note: str = ""


def policy(name: str, *, bake: str = "60s", extra: str = "") -> str:
    """classifier:v2, no validation, 10 % baking for ``bake``, an error-rate gate."""
    return rollout_policy("classifier:v2", name=name, steps=[(10, bake), (100, "2s")],
                          checks="[]", metrics=ERROR_RATE, consecutive_error_limit=3,
                          deadline="5m", extra=extra)


def _until(predicate: Callable[[], object], timeout: float = 60.0, step: float = 0.05
           ) -> float | None:
    """Seconds until ``predicate()`` is truthy, or None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(ApiError, OSError):
            if predicate():
                return time.monotonic() - started
        time.sleep(step)
    return None


@contextlib.contextmanager
def _stack(directory: Path | None = None) -> Iterator[tuple[stack.StackInfo, ApiClient]]:
    own = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="turnout-chaos-"))
    info = stack.up(directory, per_slot=2, progress=lambda line: print(line, flush=True))
    try:
        registry_for(directory).push(EXAMPLES / "v2", name="classifier", version="v2")
        yield info, ApiClient(info.api_url, info.token, actor="chaos")
    finally:
        with contextlib.suppress(Exception):
            stack.down(directory)
        if own:
            shutil.rmtree(directory, ignore_errors=True)


def _finish(row: Row, info: stack.StackInfo, client: ApiClient, load: LoadGenerator,
            audit_before: int | None = None) -> Row:
    stats = load.stop()
    row.sent, row.failed = stats.sent, stats.failed
    if stats.errors:
        row.note = (row.note + "; " if row.note else "") + ", ".join(
            f"{k} x{v}" for k, v in stats.errors.items())
    with contextlib.suppress(ApiError):
        status = client.status()
        row.weights = f"blue {status['weights']['blue']} / green {status['weights']['green']}"
        if status.get("rollout"):
            row.phase = status["rollout"]["phase"]
    if audit_before is not None:
        entries = Store(Path(info.directory) / "state.db").history(limit=100_000)
        row.audit_kept = len(entries) >= audit_before
    print(f"  {row}", flush=True)
    return row


def _ready(client: ApiClient, slot: str) -> list[bool]:
    return [e["ready"] for e in client.status()["slots"][slot]]


def _baking(client: ApiClient, text: str) -> None:
    client.apply(text, "chaos.yaml")
    if _until(lambda: client.rollout()["phase"] == "baking", 60) is None:
        raise RuntimeError(f"rollout never baked: {client.rollout()['reason']}")


def _audit(info: stack.StackInfo) -> int:
    return len(Store(Path(info.directory) / "state.db").history(limit=100_000))


def one_server() -> Row:
    row = Row("one Triton server SIGKILLed (50/50 split)")
    with _stack() as (info, client):
        client.set_traffic(green=50)
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        time.sleep(2)
        os.kill(info.processes["triton-green-0"], signal.SIGKILL)
        row.detect_s = _until(lambda: _ready(client, "green") == [False, True], 10)
        row.recover_s = 0.0  # Envoy retried the requests on the other servers at once
        time.sleep(3)
        row.note = "retries on another host; health check + outlier detection take it out"
        return _finish(row, info, client, load)


def candidate_slot() -> Row:
    row = Row("whole candidate slot SIGKILLed mid-bake (10%)")
    with _stack() as (info, client):
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        _baking(client, policy("chaos"))
        before = _audit(info)
        time.sleep(1.5)
        killed = time.time()
        for name in ("triton-green-0", "triton-green-1"):
            os.kill(info.processes[name], signal.SIGKILL)
        row.detect_s = _until(lambda: client.rollout()["phase"] != "baking", 20)
        _until(lambda: client.rollout()["phase"] in FINISHED, 30)
        done = client.rollout()
        if done.get("rollback_acked_at"):
            row.recover_s = done["rollback_acked_at"] - killed
        row.note = done["reason"][:90]
        time.sleep(2)
        return _finish(row, info, client, load, before)


def idle_slot() -> Row:
    row = Row("whole idle slot SIGKILLed (blue 100%)")
    with _stack() as (info, client):
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        time.sleep(2)
        for name in ("triton-green-0", "triton-green-1"):
            os.kill(info.processes[name], signal.SIGKILL)
        row.detect_s = _until(lambda: not any(_ready(client, "green")), 10)
        row.recover_s = 0.0
        time.sleep(3)
        apply_refused = ""
        try:
            client.apply(policy("onto-dead-slot"), "chaos.yaml")
            _until(lambda: client.rollout()["phase"] in FINISHED, 60)
            apply_refused = client.rollout()["phase"]
        except ApiError as exc:
            apply_refused = str(exc)[:60]
        row.note = f"a rollout onto it: {apply_refused}"
        return _finish(row, info, client, load)


def envoy_restart() -> Row:
    row = Row("Envoy SIGKILLed and started again (the only proxy)")
    with _stack() as (info, client):
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        time.sleep(2)
        os.kill(info.processes["envoy envoy-0"], signal.SIGKILL)
        killed = time.monotonic()
        directory = Path(info.directory)
        proxy = EnvoyProxy.start(node_id="envoy-0", node_cluster="turnout",
                                 xds_host="127.0.0.1", xds_port=info.xds_port,
                                 work_dir=directory / "restarted", log_dir=directory / "logs")
        try:
            proxy.wait_ready()
            ok = _until(lambda: send(info.ingress, 1, model="classifier").ok == 1, 30)
            row.recover_s = None if ok is None else time.monotonic() - killed
            row.detect_s = 0.0
            time.sleep(2)
            row.note = ("a crash of the only proxy loses what it held and fails requests "
                        "until it is back: see the two-proxy rows; a planned restart is the "
                        "hot-restart row")
            return _finish(row, info, client, load)
        finally:
            proxy.stop()


def envoy_hot_restart() -> Row:
    row = Row("Envoy hot-restarted twice under load (`turnout stack restart-envoy`)")
    with _stack() as (info, client):
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        time.sleep(2)
        directory = Path(info.directory)
        done = [*stack.restart_envoy(directory), *stack.restart_envoy(directory)]
        row.detect_s = row.recover_s = 0.0  # the ingress never closed
        pid = stack.StackInfo.load(directory).processes["envoy envoy-0"]
        time.sleep(2)
        row.note = (f"pids {done[0][1]} -> {done[0][2]} -> {pid}; each old process drained "
                    f"{DRAIN_TIME_S}s and ended {PARENT_SHUTDOWN_S}s after its successor "
                    f"started (restarts took {done[0][3]:.1f}s and {done[1][3]:.1f}s)")
        return _finish(row, info, client, load)


CLIENTS = 16


def _one_of_two_killed(case: str, *, retry: bool) -> Row:
    """Two Envoys on the ingress port (SO_REUSEPORT, as `stack up --replicas 2` runs
    them): clients connect to both, then the second is SIGKILLed."""
    row = Row(case)
    with _stack() as (info, client):
        directory = Path(info.directory)
        second = EnvoyProxy.start(node_id="envoy-1", node_cluster="turnout",
                                  xds_host="127.0.0.1", xds_port=info.xds_port,
                                  work_dir=directory, log_dir=directory / "logs")
        try:
            second.wait_ready()
            # Closed loop (no rate): every connection always has a request in flight.
            load = LoadGenerator(info.ingress, model="classifier", concurrency=CLIENTS,
                                 retry_unavailable=retry, own_connections=True).start()
            time.sleep(2)
            held = second.stats("http.ingress.downstream_cx_active").get(
                "http.ingress.downstream_cx_active")
            os.kill(second.process.pid, signal.SIGKILL)
            row.detect_s = 0.0
            row.recover_s = _until(lambda: send(info.ingress, 1, model="classifier").ok == 1,
                                   10)
            time.sleep(3)
            row.note = (f"the killed proxy held {held} of {CLIENTS} client connections "
                        "(closed loop: one request in flight on each); "
                        + ("clients retry UNAVAILABLE (gRPC retry policy, 3 attempts) and "
                           "reconnect to the survivor" if retry else
                           "clients without a retry policy lose what was in flight there"))
            return _finish(row, info, client, load)
        finally:
            second.stop()


def proxy_killed_retrying() -> Row:
    return _one_of_two_killed("one of two proxies SIGKILLed, clients retry UNAVAILABLE",
                              retry=True)


def proxy_killed_plain() -> Row:
    return _one_of_two_killed("one of two proxies SIGKILLed, clients without retries",
                              retry=False)


def control_plane_kill() -> Row:
    row = Row("control plane SIGKILLed mid-bake, restarted")
    with _stack() as (info, client):
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        _baking(client, policy("chaos", bake="8s"))
        before = _audit(info)
        step = client.rollout()["step"]
        os.kill(info.processes["controlplane"], signal.SIGKILL)
        time.sleep(3)  # Envoy keeps the last good configuration and serves
        restarted = time.monotonic()
        stack.restart_control_plane(Path(info.directory))
        row.recover_s = _until(lambda: client.rollout()["step"] == step, 30)
        row.detect_s = 0.0
        if row.recover_s is not None:
            row.recover_s = time.monotonic() - restarted
        _until(lambda: client.rollout()["phase"] in FINISHED, 60)
        row.note = "resumed at the same step; Envoy served throughout"
        return _finish(row, info, client, load, before)


def prometheus_stop() -> Row:
    row = Row("Prometheus stopped mid-bake")
    with _stack() as (info, client):
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=300).start()
        _baking(client, policy("chaos"))
        before = _audit(info)
        os.kill(info.processes["prometheus"], signal.SIGKILL)
        row.detect_s = _until(lambda: client.rollout()["phase"] == "paused", 30)
        row.note = (client.rollout()["reason"] or "")[:90]
        return _finish(row, info, client, load, before)


def proxy_stopped() -> Row:
    row = Row("one of two proxies SIGSTOPped during a rollout (minAcked 99%)")
    with _stack() as (info, client):
        directory = Path(info.directory)
        # The clients connect first: both proxies get the same listener and bind the same
        # port (SO_REUSEPORT), and a connection the kernel gave the frozen one would hang.
        # A real sidecar's clients are its own; here they all belong to envoy-0.
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4,
                             rate=300).start()
        time.sleep(1)
        second = EnvoyProxy.start(node_id="envoy-1", node_cluster="turnout",
                                  xds_host="127.0.0.1", xds_port=info.xds_port,
                                  work_dir=directory, log_dir=directory / "logs")
        try:
            second.wait_ready()
            os.kill(second.process.pid, signal.SIGSTOP)
            started = time.monotonic()
            client.apply(policy("chaos", bake="2s", extra="\n  convergence: {minAcked: 99%, "
                                                          "timeout: 2s}"), "chaos.yaml")
            _until(lambda: client.rollout()["phase"] in FINISHED, 90)
            row.detect_s = time.monotonic() - started
            stragglers = (client.status().get("last_push") or {}).get("stragglers")
            os.kill(second.process.pid, signal.SIGCONT)
            row.recover_s = _until(
                lambda: all(p["in_sync"] for p in client.status()["xds"]["proxies"]), 30)
            row.note = f"completed with stragglers {stragglers}; in sync after SIGCONT"
            return _finish(row, info, client, load)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(second.process.pid, signal.SIGCONT)
            second.stop()


def store_full() -> Row:
    row = Row("state store on a full tmpfs mid-bake, then freed")
    directory = Path(tempfile.mkdtemp(prefix="turnout-chaos-"))
    small = Path(tempfile.mkdtemp(prefix="turnout-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        row.note = f"not run: cannot mount a tmpfs ({mounted.stderr.strip()[:60]})"
        return row
    try:
        (directory / "state.db").symlink_to(small / "state.db")
        with _stack(directory) as (info, client):
            load = LoadGenerator(info.ingress, model="classifier", concurrency=4,
                                 rate=300).start()
            _baking(client, policy("chaos"))
            before = _audit(info)
            filler = small / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           capture_output=True)
            refused = ""
            try:
                client.command("pause")
            except ApiError as exc:
                refused = f"pause answered {exc.status}"
            started = time.monotonic()
            client.command("abort")
            pushed = _until(lambda: client.status()["weights"]["green"] == 0, 20)
            row.detect_s = 0.0
            row.recover_s = None if pushed is None else time.monotonic() - started
            filler.unlink()
            stored = _until(lambda: Store(directory / "state.db").latest_rollout()["phase"]
                            in FINISHED, 20)
            row.note = (f"{refused}; abort pushed {row.recover_s or 0:.2f}s after the command "
                        f"while writes failed; recorded {stored or 0:.2f}s after space came "
                        "back")
            return _finish(row, info, client, load, before)
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(small, ignore_errors=True)


CASES: dict[str, Callable[[], object]] = {
    "one_server": one_server, "candidate_slot": candidate_slot, "idle_slot": idle_slot,
    "envoy_restart": envoy_restart, "envoy_hot_restart": envoy_hot_restart,
    "proxy_killed_plain": proxy_killed_plain, "proxy_killed_retrying": proxy_killed_retrying,
    "control_plane": control_plane_kill,
    "prometheus": prometheus_stop, "proxy_stopped": proxy_stopped, "store_full": store_full,
    **PARTITIONS,
}


def render(rows: list[dict]) -> str:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"
    partitions = [r for r in rows if "expected" in r]
    rows = [r for r in rows if "expected" not in r]
    lines = [
        "# Reliability: `make chaos`", "",
        "One fault at a time under steady gRPC load through Envoy (4 clients, 300 req/s), "
        "each on a fresh local stack with two Triton servers per slot. Reproduce with "
        "`make chaos` (`.venv/bin/python -m bench.chaos --only CASE ...` for some).", "",
        "| case | sent | failed | detect s | recover s | final phase | weights | audit kept "
        "| note |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['sent']} | {r['failed']} | {num(r['detect_s'])} | "
                     f"{num(r['recover_s'])} | {r['phase']} | {r['weights']} | "
                     f"{'yes' if r['audit_kept'] else 'NO'} | {r['note']} |")
    lines += ["", "Detect: until the control plane showed the fault (a server not ready, the "
              "rollout leaving `baking`); recover: until traffic was whole again (rollback "
              "ACKed, proxy back, rollout at the same step). 0.00 where Envoy handled it "
              "without the control plane (retries, failover)."]
    if partitions:
        lines += [
            "", "## Partitions", "",
            "Two control-plane replicas and two Envoys, each in a network namespace of its "
            "own, PostgreSQL and four Triton servers on this host, each on an address of its "
            "own (`bench/partitions.py`); a partition is a blackhole route between two "
            "addresses, removed to heal. Load: 100 requests/s through each Envoy. The "
            "expected outcome was written before the case ran. Reproduce with `make chaos` "
            "(`.venv/bin/python -m bench.chaos --only partition_...` for some).", "",
            "| case | expected | sent | failed | decided | healed s | audit kept | note |",
            "|---|---|---:|---:|---|---:|---|---|"]
        for r in partitions:
            lines.append(f"| {r['case']} | {r['expected']} | {r['sent']} | {r['failed']} | "
                         f"{r['decided']} | {num(r['healed_s'])} | "
                         f"{'yes' if r['audit_kept'] else 'NO'} | {r['note']} |")
        lines += ["", "Healed: from the heal until the partitioned part agreed with the "
                  "rest again (its weights, its readiness); 0.00 where nothing had to catch "
                  "up. Audit kept: every entry present before the partition is there after."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    args = parser.parse_args(argv)
    previous = OUT / "chaos.json"
    kept = {r.get("key"): r for r in json.loads(previous.read_text())["rows"]} \
        if args.only and previous.exists() else {}
    rows = []
    for name in args.only or list(CASES):
        print(f"== chaos: {name}", flush=True)
        try:
            row = asdict(CASES[name]())
        except Exception as exc:  # a case that could not run is reported, not hidden
            note = f"case errored: {type(exc).__name__}: {exc}"[:150]
            row = asdict(PartitionRow(name, "-", note=note) if name in PARTITIONS
                         else Row(name, note=note))
            print(f"  errored: {exc}", flush=True)
        kept[name] = {**row, "key": name}
    rows = [kept[name] for name in CASES if name in kept]  # --only: the others as they were
    write_json("chaos", {"rows": rows})
    (ROOT_DIR / "RELIABILITY.md").write_text(render(rows))
    print(render(rows))


if __name__ == "__main__":
    main()
