"""``make chaos``, partitions: two control-plane replicas and two Envoys, each in a network
namespace of its own (tests/netns.py), PostgreSQL and four Triton servers on this host,
each on an address of its own on the namespaces' bridge. A partition is a pair of
addresses that cannot reach each other: a blackhole route in the namespace that sends
(``ip route add blackhole``; TCP then cannot answer either, so both sides lose the
connection), removed to heal. Each case states what should happen, then measures it under
load through both Envoys: requests sent and failed, decisions taken or refused, time to
heal, and whether the audit log kept every entry.

The rules held: a partition never causes a promotion the gates did not pass, never loses a
committed decision, and never leaves two replicas pushing different weights to the same
proxy (each proxy listens to one replica at a time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import OUT, ROOT_DIR
from bench.policies import policy as rollout_policy
from tests.netns import Host, Network
from triton_slots.launcher import TritonServer, prepare_backends
from triton_slots.loadgen import LoadGenerator
from triton_slots.metrics import requests_served
from triton_slots.procs import ManagedProcess, wait_http
from triton_slots.registry import open_registry
from triton_slots.routing import SLOT_NAMES
from triton_slots.slot import Endpoint, Slot
from turnout.client import ApiClient
from turnout.config import ControlPlaneConfig
from turnout.errors import ApiError
from turnout.postgres import PostgresServer
from turnout.proxy import envoy_binary, render_bootstrap, route_weights
from turnout.seed import registry_root, seed_all, slot_repository
from turnout.stack import EXAMPLE_MODEL
from turnout.tokens import Role, mint
from xds_server.pki import LocalCA
from xds_server.transport import TlsFiles

EXAMPLES = ROOT_DIR / "examples" / "models" / "classifier"
INGRESS, XDS, API, ADMIN = 18080, 18000, 18088, 19901
FINISHED = {"promoted", "rolled_back", "aborted", "failed"}
ENVOY_SOURCE = "\n      - {name: error-rate, builtin: error_rate, max: 0.01, source: envoy}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@dataclass
class Lab:
    root: Path
    net: Network
    token: str = ""
    db: str = ""  # PostgreSQL's address
    servers: dict[str, list[str]] = field(default_factory=dict)  # slot -> addresses
    processes: list[ManagedProcess] = field(default_factory=list)
    tritons: list[TritonServer] = field(default_factory=list)
    postgres: PostgresServer | None = None
    blocked: list[tuple[str, str]] = field(default_factory=list)
    loads: list[LoadGenerator] = field(default_factory=list)

    # ---- the parts ----------------------------------------------------------------------
    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def api(self, replica: str) -> ApiClient:
        return ApiClient(f"http://{self.host(replica).address}:{API}", self.token,
                         actor="chaos", timeout=5)

    def envoy_admin(self, envoy: str) -> str:
        return f"http://{self.host(envoy).address}:{ADMIN}"

    def leader(self) -> tuple[str, str]:
        """(leader, follower) by their own status."""
        leading = [r for r in ("cpa", "cpb") if self.api(r).status()["replica"]["leading"]]
        if len(leading) != 1:
            raise RuntimeError(f"leaders: {leading}")
        return leading[0], "cpb" if leading[0] == "cpa" else "cpa"

    def served(self) -> dict[str, int]:
        """Inference requests each slot's servers have served so far."""
        return {slot: requests_served([s.endpoint for s in self.tritons
                                       if s.endpoint.host in addresses])
                for slot, addresses in self.servers.items()}

    def weights(self, envoy: str) -> dict[str, int]:
        return route_weights(self.envoy_admin(envoy))

    def xds_server(self, envoy: str) -> str:
        """The replica an Envoy's ADS stream is on now (by its config dump's source)."""
        with urllib.request.urlopen(self.envoy_admin(envoy) + "/clusters?format=json",
                                    timeout=2) as answer:
            clusters = json.load(answer)["cluster_statuses"]
        xds = next(c for c in clusters if c["name"] == "xds_cluster")
        for status in xds.get("host_statuses", []):
            if status.get("stats") and any(s.get("name") == "cx_active" and
                                           int(s.get("value", 0)) > 0
                                           for s in status["stats"]):
                address = status["address"]["socket_address"]["address"]
                return next(n for n in ("cpa", "cpb") if self.host(n).address == address)
        return ""

    # ---- partitions -----------------------------------------------------------------------
    def block(self, namespace: str, address: str) -> None:
        """Cut ``namespace`` from ``address``: both ways when the address is another
        namespace's (an address of this host can be cut only from the namespace's side,
        which is enough for TCP: nothing the namespace sends arrives, not even an ACK)."""
        _ip("-n", self.host(namespace).name, "route", "add", "blackhole", f"{address}/32")
        self.blocked.append((namespace, address))
        other = next((n for n, h in self.net.hosts.items() if h.address == address), None)
        if other is not None:
            mine = self.host(namespace).address
            _ip("-n", self.host(other).name, "route", "add", "blackhole", f"{mine}/32")
            self.blocked.append((other, mine))

    def heal(self) -> None:
        for namespace, address in self.blocked:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("-n", self.host(namespace).name, "route", "del", "blackhole",
                    f"{address}/32")
        self.blocked = []

    # ---- load ---------------------------------------------------------------------------
    def start_load(self) -> None:
        self.loads = [LoadGenerator(f"{self.host(e).address}:{INGRESS}", model="classifier",
                                    concurrency=2, rate=100).start() for e in ("e0", "e1")]

    def stop_load(self) -> tuple[int, int, dict[str, int]]:
        sent = failed = 0
        errors: dict[str, int] = {}
        for load in self.loads:
            stats = load.stop()
            sent, failed = sent + stats.sent, failed + stats.failed
            for key, count in stats.errors.items():
                errors[key] = errors.get(key, 0) + count
        self.loads = []
        return sent, failed, errors


def _until(predicate: Callable[[], object], timeout: float = 60.0, step: float = 0.05
           ) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(ApiError, OSError, ValueError, KeyError, RuntimeError,
                                 StopIteration):
            if predicate():
                return time.monotonic() - started
        time.sleep(step)
    return None


@contextlib.contextmanager
def lab(progress: Callable[[str], None] = print) -> Iterator[Lab]:
    """Start the lab; stop everything and remove the namespaces on the way out."""
    root = Path(tempfile.mkdtemp(prefix="turnout-partition-"))

    def interrupt(signum: int, frame: object) -> None:  # SIGTERM unwinds like Ctrl-C
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    net = Network.create()
    made = Lab(root, net)
    try:
        for name in ("cpa", "cpb", "e0", "e1"):
            net.add(name)
        # This host's own addresses on the bridge: PostgreSQL's, then one per server.
        made.db = f"{net.subnet}.2"
        addresses = [f"{net.subnet}.{3 + i}" for i in range(4)]
        for address in (made.db, *addresses):
            _ip("addr", "add", f"{address}/24", "dev", net.bridge)
        progress("partition lab: PostgreSQL")
        made.postgres = PostgresServer.start(log_path=root / "logs" / "postgresql.log",
                                             host=made.db, trust=f"{net.subnet}.0/24")
        progress("partition lab: four Triton servers")
        backends = prepare_backends(root / "triton-backends")
        records = seed_all(root, [EXAMPLE_MODEL])
        for i, slot in enumerate(s for s in SLOT_NAMES for _ in range(2)):
            server = TritonServer.start(
                name=f"triton-{slot}-{i % 2}", model_repository=slot_repository(root, slot),
                backends=backends, log_path=root / "logs" / f"triton-{slot}-{i % 2}.log",
                models=[r.model_name for r in records],
                host=addresses[i], endpoint=Endpoint(addresses[i], 8000, 8001, 8002))
            made.tritons.append(server)
            made.servers.setdefault(slot, []).append(addresses[i])
        for server in made.tritons:
            server.wait_ready()
        registry = open_registry(made.postgres.url, registry_root(root))
        seed_all(root, [EXAMPLE_MODEL], registry=registry)
        registry.push(EXAMPLES / "v2", name="classifier", version="v2")
        admin, made.token = mint("chaos-admin", Role.ADMIN)
        # Beyond one host the access-log stream (the gates' data) is accepted over mTLS only.
        ca = LocalCA.create(root / "pki")
        server = ca.issue_server("server", hosts=("localhost", made.host("cpa").address,
                                                  made.host("cpb").address))
        clients = {e: ca.issue_client(f"client-{e}", (e,)) for e in ("e0", "e1")}
        slots = {slot: Slot(slot, tuple(s.endpoint for s in made.tritons
                                        if s.endpoint.host in made.servers[slot]),
                            slot_repository(root, slot)) for slot in SLOT_NAMES}
        # One configuration, two replicas (what differs: where each binds, its state): the
        # preview key and every route setting must be the same for their routes to match.
        shared = ControlPlaneConfig(
            state_dir=root, tokens=(admin,), xds_port=XDS, api_port=API,
            ingress_host="0.0.0.0", ingress_port=INGRESS, slots=slots,
            registry_root=str(registry_root(root)), store=made.postgres.url,
            tls=TlsFiles(server.cert, server.key, ca.cert))
        for replica in ("cpa", "cpb"):
            progress(f"partition lab: control plane {replica}")
            state = root / replica
            state.mkdir()
            config = dataclasses.replace(shared, state_dir=state, replica=replica,
                                         bind_host=made.host(replica).address)
            config.write(state / "controlplane.json")
            process = ManagedProcess.spawn(
                replica, made.host(replica).argv(sys.executable, "-m", "turnout.controlplane",
                                                 "--config", str(state / "controlplane.json")),
                log_path=root / "logs" / f"{replica}.log")
            made.processes.append(process)
            wait_http(process, f"http://{made.host(replica).address}:{API}/healthz",
                      timeout=30, what=f"control plane {replica}")
        for envoy, prefers, then in (("e0", "cpa", "cpb"), ("e1", "cpb", "cpa")):
            progress(f"partition lab: Envoy {envoy} (prefers {prefers})")
            bootstrap = root / f"{envoy}.yaml"
            bootstrap.write_text(render_bootstrap(
                node_id=envoy, node_cluster="turnout", admin_port=ADMIN,
                admin_host=made.host(envoy).address, xds_host=made.host(prefers).address,
                xds_port=XDS, xds_fallbacks=[(made.host(then).address, XDS)],
                tls=TlsFiles(clients[envoy].cert, clients[envoy].key, ca.cert)))
            process = ManagedProcess.spawn(
                envoy, made.host(envoy).argv(envoy_binary(), "-c", str(bootstrap),
                                             "--disable-hot-restart", "--concurrency", "1",
                                             "--drain-time-s", "2"),
                log_path=root / "logs" / f"{envoy}.log")
            made.processes.append(process)
            wait_http(process, f"{made.envoy_admin(envoy)}/ready", timeout=30,
                      what=f"envoy {envoy}")
        if _until(lambda: made.leader(), 15) is None:
            raise RuntimeError("no leader among the replicas")
        yield made
    finally:
        for load in made.loads:
            with contextlib.suppress(Exception):
                load.stop()
        made.heal()
        for process in reversed(made.processes):
            process.stop()
        for server in made.tritons:
            server.stop()
        if made.postgres is not None:
            made.postgres.stop()
        net.remove()
        keep = OUT / "partition-logs"  # what each process said, for the closing figures
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(root / "logs", keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def policy(name: str, *, bake: str) -> str:
    return rollout_policy("classifier:v2", name=name, steps=[(10, bake), (100, "2s")],
                          checks="[]", metrics=ENVOY_SOURCE, consecutive_error_limit=5,
                          deadline="5m")


@dataclass
class PartitionRow:
    case: str
    expected: str
    sent: int = 0
    failed: int = 0
    decided: str = ""
    healed_s: float | None = None
    audit_kept: bool = True
    note: str = ""


def _audit(made: Lab) -> list:
    from turnout.store.postgresql import PostgresStore

    assert made.postgres is not None
    store = PostgresStore(made.postgres.url)
    try:
        return store.history(limit=100_000)
    finally:
        store.close()


def _finish(row: PartitionRow, made: Lab, before: list | None = None) -> PartitionRow:
    row.sent, row.failed, errors = made.stop_load()
    if errors:
        row.note = (row.note + "; " if row.note else "") + ", ".join(
            f"{k} x{v}" for k, v in errors.items())
    if before is not None:
        after = {e.seq for e in _audit(made)}
        row.audit_kept = {e.seq for e in before} <= after
    print(f"  {row}", flush=True)
    return row


def _baking(client: ApiClient, text: str) -> None:
    client.apply(text, "partition.yaml")
    if _until(lambda: client.rollout()["phase"] == "baking", 60) is None:
        raise RuntimeError(f"rollout never baked: {client.rollout()['reason']}")


def _log_lines(made: Lab, replica: str, *needles: str) -> int:
    text = (made.root / "logs" / f"{replica}.log").read_text(errors="replace")
    return sum(text.count(n) for n in needles)


def leader_cut_from_store() -> PartitionRow:
    row = PartitionRow(
        "the leader cut from PostgreSQL, not from its Envoys (mid-bake)",
        "the follower leads within seconds (a new epoch) and finishes the rollout; the cut "
        "leader stops leading and stores nothing; its Envoy keeps the weights it last sent "
        "until the cut heals, then follows; 0 failed")
    with lab() as made:
        made.start_load()
        leader, follower = made.leader()
        envoy, other = ("e0", "e1") if leader == "cpa" else ("e1", "e0")
        _baking(made.api(leader), policy("cut-leader", bake="10s"))
        before = _audit(made)
        cut = time.monotonic()
        cut_at = time.time()
        made.block(leader, made.db)
        took = _until(lambda: made.api(follower).status()["replica"]["leading"], 30)
        down = _until(lambda: not made.api(leader).status()["replica"]["leading"], 30)
        epoch = made.api(follower).status()["replica"].get("epoch")
        _until(lambda: made.api(follower).rollout()["phase"] in FINISHED, 90)
        done = made.api(follower).rollout()
        stale, fresh = made.weights(envoy), made.weights(other)
        made.heal()
        healed = _until(lambda: made.weights(envoy) == made.weights(other), 30)
        time.sleep(1)
        entries = _audit(made)
        takeover = next((e.at for e in entries if e.kind == "leader" and e.at > cut_at), None)
        between = [e for e in entries if cut_at < e.at < (takeover or time.time())]
        refused = _log_lines(made, leader, "state write failed", "taken over")
        row.decided = (f"{follower} led {took or 0:.1f}s after the cut (epoch {epoch}) and "
                       f"{done['phase']} the rollout; {leader} stopped leading after "
                       f"{(down or 0):.1f}s; audit entries between cut and takeover: "
                       f"{len(between)}; {leader}'s refused or failed writes: {refused}")
        row.healed_s = healed
        row.note = (f"while cut, {envoy} (on {leader}) served {stale} and {other} {fresh}; "
                    f"cut for {time.monotonic() - cut:.0f}s")
        return _finish(row, made, before)


def envoy_cut_from_its_replica() -> PartitionRow:
    row = PartitionRow(
        "an Envoy cut from the replica it prefers (mid-bake)",
        "it moves to the other replica in about a second, gets the same weights there, "
        "and the rollout finishes; 0 failed")
    with lab() as made:
        made.start_load()
        leader, _ = made.leader()
        _baking(made.api(leader), policy("cut-envoy", bake="6s"))
        before = _audit(made)
        made.block("e0", made.host("cpa").address)
        moved = _until(lambda: "e0" in [p["node"] for p in
                                        made.api("cpb").status()["xds"]["proxies"]], 30)
        _until(lambda: made.api(leader).rollout()["phase"] in FINISHED, 60)
        done = made.api(leader).rollout()
        same = _until(lambda: made.weights("e0") == made.weights("e1") ==
                      {"blue": 0, "green": 100}, 20)
        made.heal()
        row.healed_s = None  # nothing to catch up: e0 stays on cpb, in sync
        row.decided = (f"e0 on cpb {moved or 0:.1f}s after the cut; rollout {done['phase']}"
                       f"{'' if done['phase'] in FINISHED else ' (' + done['reason'] + ')'}; "
                       f"both Envoys at the final weights {'yes' if same is not None else 'NO'}")
        if leader == "cpa" and done["phase"] not in FINISHED:
            row.note = ("cpa led: its only Envoy moved to cpb, so its gates (Envoy's "
                        "access-log stream, read by the leader from its own Envoys) had no "
                        "data and held: missing data is never a pass")
        time.sleep(1)
        return _finish(row, made, before)


def envoy_cut_from_all() -> PartitionRow:
    row = PartitionRow(
        "an Envoy cut from every control plane (mid-bake; the follower's Envoy)",
        "it keeps serving its last good configuration (the 10 % step); its replica finds "
        "the stream dead within about 10 s (keepalive) and the rollout goes on with the "
        "proxies still connected; healed, it reconnects and takes the current weights; "
        "0 failed")
    with lab() as made:
        made.start_load()
        leader, follower = made.leader()
        # The leader's gates read its own Envoys' access logs: cut the follower's Envoy
        # (cutting the leader's only Envoy leaves the gates without data: they hold).
        envoy = "e1" if leader == "cpa" else "e0"
        _baking(made.api(leader), policy("cut-all", bake="4s"))
        before = _audit(made)
        cut = time.monotonic()
        made.block(envoy, made.host("cpa").address)
        made.block(envoy, made.host("cpb").address)
        dropped = _until(lambda: envoy not in [p["node"] for p in
                                              made.api(follower).status()["xds"]["proxies"]],
                         60)
        _until(lambda: made.api(leader).rollout()["phase"] in FINISHED, 60)
        done = made.api(leader).rollout()
        time.sleep(2)
        stale = made.weights(envoy)
        made.heal()
        healed = _until(lambda: made.weights(envoy) == {"blue": 0, "green": 100}, 60)
        row.healed_s = healed
        row.decided = (f"{follower} dropped {envoy}'s dead stream "
                       f"{dropped if dropped is None else round(dropped, 1)}s after the cut; "
                       f"rollout {done['phase']} {time.monotonic() - cut:.0f}s after it; "
                       f"{envoy} served {stale} meanwhile")
        time.sleep(1)
        return _finish(row, made, before)


def _served_by(made: Lab, address: str) -> list[bool]:
    return [e["ready"] for e in made.api("cpa").status()["slots"]["blue"]
            if e["endpoint"].startswith(address)]


def _cut_one_server(made: Lab, sides: tuple[str, ...]) -> str:
    """Under load for 2 s, then blue's first server cut from ``sides``; its address."""
    made.start_load()
    time.sleep(2)
    target = made.servers["blue"][0]
    for side in sides:
        made.block(side, target)
    return target


def server_cut_from_probes() -> PartitionRow:
    row = PartitionRow(
        "one Triton server cut from the control planes' probes, not from Envoy",
        "the control planes mark it not ready and Envoy stops using it (capacity down by "
        "one); healed, it is ready again; 0 failed")
    with lab() as made:
        target = _cut_one_server(made, ("cpa", "cpb"))
        detect = _until(lambda: _served_by(made, target) == [False], 30)
        time.sleep(3)
        made.heal()
        healed = _until(lambda: _served_by(made, target) == [True], 30)
        row.healed_s = healed
        row.decided = f"marked not ready {detect or 0:.1f}s after the cut"
        time.sleep(1)
        return _finish(row, made)


def server_cut_from_envoys() -> PartitionRow:
    row = PartitionRow(
        "one Triton server cut from both Envoys, not from the control planes",
        "Envoy's retries and its own health checks avoid it; the control planes still see "
        "it ready; 0 failed")
    with lab() as made:
        target = _cut_one_server(made, ("e0", "e1"))
        time.sleep(5)
        seen = _served_by(made, target)
        made.heal()
        row.healed_s = 0.0
        row.decided = f"the control planes' view of it while cut: ready={seen}"
        time.sleep(1)
        return _finish(row, made)


def slot_cut_from_probes() -> PartitionRow:
    row = PartitionRow(
        "every server of the serving slot cut from the control planes' probes, not from "
        "Envoy",
        "the control planes report the slot unready but do not make Envoy drop servers it "
        "can still reach (its own health checks decide); 0 failed")
    with lab() as made:
        made.start_load()
        time.sleep(2)
        served = made.served()
        for replica in ("cpa", "cpb"):
            for target in made.servers["blue"]:
                made.block(replica, target)
        detect = _until(lambda: made.api("cpa").status()["slots"]["blue"] and not any(
            e["ready"] for e in made.api("cpa").status()["slots"]["blue"]), 30)
        time.sleep(4)
        during = {slot: n - served[slot] for slot, n in made.served().items()}
        made.heal()
        healed = _until(lambda: all(e["ready"] for e in
                                    made.api("cpa").status()["slots"]["blue"]), 30)
        row.healed_s = healed
        row.decided = (f"blue reported 0/2 ready {detect or 0:.1f}s after the cut; requests "
                       f"served while cut: blue {during['blue']}, green {during['green']}")
        time.sleep(1)
        return _finish(row, made)


CASES: dict[str, Callable[[], PartitionRow]] = {
    "partition_leader_store": leader_cut_from_store,
    "partition_envoy_replica": envoy_cut_from_its_replica,
    "partition_envoy_all": envoy_cut_from_all,
    "partition_server_probes": server_cut_from_probes,
    "partition_server_envoys": server_cut_from_envoys,
    "partition_slot_probes": slot_cut_from_probes,
}


def main(argv: list[str] | None = None) -> None:
    """Run some cases and print their rows (``make chaos`` runs them all with the rest)."""
    import argparse
    from dataclasses import asdict

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    args = parser.parse_args(argv)
    for name in args.only or list(CASES):
        print(f"== partition: {name}", flush=True)
        print(json.dumps(asdict(CASES[name]())), flush=True)


if __name__ == "__main__":
    main()
