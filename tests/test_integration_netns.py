"""Across hosts, on this machine: the control plane, Envoy and each Triton server in a
network namespace of its own (tests/netns.py), each with its own directory and nothing
shared on disk (Triton on an EMPTY repository, models sent in the load requests). Slots are
found by DNS: a real dnsmasq serves their names from a hosts file the test rewrites; the
control plane's namespace resolves through it. Envoy reaches the control plane over mutual
TLS (its access-log stream too). The rollout is driven only through the CLI with a context,
from the host namespace. Under load through Envoy: a full rollout, a rollback, a server added
to the active slot, a server killed, a server's namespace cut off and restored. Figures are
printed (the closing note and docs/servers.md quote them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.netns import Network
from tests.rollout_helpers import EXAMPLES, FINISHED, policy
from triton_slots.launcher import prepare_backends, triton_environment, tritonserver_binary
from triton_slots.loadgen import LoadGenerator
from triton_slots.metrics import requests_served
from triton_slots.procs import ManagedProcess, wait_http
from triton_slots.registry import LocalRegistry, Stage
from triton_slots.slot import DnsName, Endpoint, Slot
from turnout.cli import main as cli
from turnout.config import ControlPlaneConfig
from turnout.proxy import envoy_binary, render_bootstrap
from turnout.tokens import Role, mint
from xds_server.pki import LocalCA
from xds_server.transport import TlsFiles

pytestmark = pytest.mark.integration
GRPC, HTTP, METRICS = 8001, 8000, 8002  # the same on every server: one DNS name each slot
INGRESS, XDS, API, ADMIN = 18080, 18000, 18088, 19901
ZONE = "slots.turnout.test"


def _dnsmasq() -> str:
    found = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(found).exists():
        pytest.fail("dnsmasq missing: `make dnsmasq` installs Debian's dnsmasq-base")
    return found


class Lab:
    """Everything the test started, for the figures and the cleanup."""

    def __init__(self, root: Path, net: Network) -> None:
        self.root = root
        self.net = net
        self.processes: dict[str, ManagedProcess] = {}
        self.records: dict[str, list[str]] = {"blue": [], "green": []}
        self.dns: ManagedProcess | None = None

    def spawn(self, name: str, argv: list[str], **kw: object) -> ManagedProcess:
        process = ManagedProcess.spawn(name, argv, log_path=self.root / "logs" / f"{name}.log",
                                       **kw)  # type: ignore[arg-type]
        self.processes[name] = process
        return process

    def publish(self, slot: str, *hosts: str) -> None:
        """Make ``<slot>.slots.turnout.test`` resolve to these hosts' addresses now."""
        self.records[slot] = [self.net.hosts[h].address for h in hosts]
        lines = [f"{a} {s}.{ZONE}" for s, addresses in self.records.items() for a in addresses]
        path = self.root / "dns" / "slots.hosts"
        partial = path.with_suffix(".partial")
        partial.write_text("\n".join(lines) + "\n")
        os.replace(partial, path)
        assert self.dns is not None
        os.kill(self.dns.pid, signal.SIGHUP)  # dnsmasq re-reads its hosts files

    def triton(self, host: str) -> Endpoint:
        node = self.net.hosts[host]
        empty = self.root / host / "models"
        empty.mkdir(parents=True)
        argv = node.argv(str(tritonserver_binary()), f"--model-repository={empty}",
                         f"--backend-directory={self.root / 'backends'}",
                         "--model-control-mode=explicit", f"--http-address={node.address}",
                         f"--http-port={HTTP}", f"--grpc-address={node.address}",
                         f"--grpc-port={GRPC}", f"--metrics-address={node.address}",
                         f"--metrics-port={METRICS}", "--allow-gpu-metrics=false",
                         "--exit-timeout-secs=5")
        process = self.spawn(f"triton-{host}", argv, env=triton_environment())
        endpoint = Endpoint(node.address, HTTP, GRPC, METRICS)
        wait_http(process, f"{endpoint.http_url}/v2/health/ready", timeout=60,
                  what=f"triton on {host}")
        return endpoint

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        if self.dns is not None:
            self.dns.stop()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("netns")
    net = Network.create()
    lab = Lab(root, net)
    try:
        for name in ("cp", "envoy", "t1", "t2", "t3"):
            net.add(name)
        (root / "dns").mkdir()
        (root / "dns" / "slots.hosts").write_text("")
        lab.dns = ManagedProcess.spawn("dnsmasq", [
            _dnsmasq(), "--keep-in-foreground", "--no-resolv", "--no-hosts",
            f"--addn-hosts={root / 'dns' / 'slots.hosts'}", f"--listen-address={net.gateway}",
            "--bind-interfaces", "--port=53", "--local-ttl=0", "--pid-file=",
            "--user=root", "--group=root",  # it reads the test's private directory
            f"--log-facility={root / 'logs' / 'dnsmasq.log'}", "--log-queries"],
            log_path=root / "logs" / "dnsmasq.out")
        prepare_backends(root / "backends")
        # Blue starts on t1, green on t2; t3 joins later.
        t1, _t2 = lab.triton("t1"), lab.triton("t2")
        registry = LocalRegistry(root / "cp" / "registry")
        registry.push(EXAMPLES / "v1", name="classifier", version="v1")
        registry.set_stage("classifier", "v1", Stage.ACTIVE, slot="blue")
        cp, envoy = net.hosts["cp"], net.hosts["envoy"]
        ca = LocalCA.create(root / "cp" / "pki")
        server = ca.issue_server("server", hosts=("localhost", cp.address))
        client = ca.issue_client("client-envoy-0", ("envoy-0",))
        admin, secret = mint("lab-admin", Role.ADMIN)
        config = ControlPlaneConfig(
            state_dir=root / "cp", tokens=(admin,), bind_host=cp.address, xds_port=XDS,
            api_port=API, ingress_host="0.0.0.0", ingress_port=INGRESS,
            ingress_client=f"{envoy.address}:{INGRESS}",
            registry_root=str(root / "cp" / "registry"),
            tls=TlsFiles(server.cert, server.key, ca.cert),
            slots={slot: Slot(slot, dns=DnsName(f"{slot}.{ZONE}", GRPC, HTTP, METRICS,
                                                interval_s=0.5))
                   for slot in ("blue", "green")})
        config.write(root / "cp" / "controlplane.json")
        lab.publish("blue", "t1")
        lab.publish("green", "t2")
        lab.spawn("controlplane", cp.argv(sys.executable, "-m", "turnout.controlplane",
                                          "--config", str(root / "cp" / "controlplane.json")))
        api = f"http://{cp.address}:{API}"
        wait_http(lab.processes["controlplane"], f"{api}/healthz", timeout=30,
                  what="the control plane")
        bootstrap = root / "envoy" / "envoy.yaml"
        bootstrap.parent.mkdir(parents=True)
        bootstrap.write_text(render_bootstrap(
            node_id="envoy-0", node_cluster=config.group, admin_port=ADMIN,
            admin_host=envoy.address, xds_host=cp.address, xds_port=XDS,
            tls=TlsFiles(client.cert, client.key, ca.cert)))
        lab.spawn("envoy", envoy.argv(envoy_binary(), "-c", str(bootstrap),
                                      "--disable-hot-restart", "--concurrency", "1",
                                      "--drain-time-s", "2"))
        wait_http(lab.processes["envoy"], f"http://{envoy.address}:{ADMIN}/ready",
                  timeout=30, what="envoy")
        token = root / "token"
        token.write_text(secret + "\n")
        yield lab, api, token, t1
    finally:
        lab.stop()
        net.remove()


def _status() -> dict:
    code, output = _cli("status", "--json", "--context", "lab")
    assert code == 0, output
    return json.loads(output)


def _wait(condition, *, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        assert time.monotonic() - started < timeout, f"never: {what}"
        time.sleep(0.1)


def test_a_fleet_across_hosts_driven_through_a_context(lab, tmp_path, monkeypatch):
    lab, api, token, _t1 = lab
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    code, output = _cli("context", "add", "lab", "--api", api, "--token-file", str(token))
    assert code == 0, output
    def serving() -> bool:
        status = _status()
        return all([e["ready"] for e in status["slots"][s]] == [True]
                   for s in ("blue", "green")) and \
            [p["in_sync"] for p in status["xds"]["proxies"]] == [True]
    _wait(serving, timeout=90, what="both slots brought up over DNS, Envoy in sync")
    time.sleep(1.0)
    status = _status()
    assert status["xds_transport"]["transport"] == "mtls"
    assert [p["node"] for p in status["xds"]["proxies"]] == ["envoy-0"]
    ingress = f"{lab.net.hosts['envoy'].address}:{INGRESS}"
    load = LoadGenerator(ingress, model="classifier", concurrency=2, rate=50).start()
    figures: dict[str, object] = {}
    phases: dict[str, tuple[int, int]] = {}

    def phase(name: str) -> None:
        ok, failed = load.counts()
        before = phases.get("_last", (0, 0))
        phases[name] = (ok - before[0], failed - before[1])
        phases["_last"] = (ok, failed)

    try:
        time.sleep(1.0)
        # 1. v2 pushed from this host (the control plane keeps the registry), then a full
        # rollout of it to green, gates on Envoy's access-log stream.
        code, output = _cli("models", "push", str(EXAMPLES / "v2"), "--name", "classifier",
                            "--version", "v2", "--context", "lab")
        assert code == 0 and output.startswith("pushed classifier:v2 digest "), output
        file = tmp_path / "v2.yaml"
        file.write_text(policy("classifier:v2", name="netns", checks="[]", steps="""
      - {weight: 50, bake: 3s}
      - {weight: 100, bake: 1s}""", metrics="""
      - {name: errors, builtin: error_rate, max: 0.01, source: envoy}"""))
        code, output = _cli("apply", str(file), "--context", "lab")
        assert code == 0, output
        _wait(lambda: _status()["rollout"]["phase"] in FINISHED | {"paused"},
              timeout=120, what="the rollout's end")
        status = _status()
        rollout = status["rollout"]
        assert rollout["phase"] == "promoted", (rollout["reason"], status["access_log"])
        assert rollout["latest_round"]["measurements"][0]["value"] == 0.0
        phase("rollout to promoted")
        # 2. Rollback: one push back to blue.
        code, output = _cli("rollback", "--context", "lab")
        assert code == 0, output
        _wait(lambda: _status()["weights"]["blue"] == 100, timeout=30,
              what="the rollback")
        time.sleep(2.0)
        phase("rollback")
        # 3. A server added to the active slot while it serves.
        t3 = lab.triton("t3")
        lab.publish("blue", "t1", "t3")
        appeared = time.monotonic()
        _wait(lambda: len(_status()["slots"]["blue"]) == 2, timeout=60,
              what="t3 admitted")
        figures["t3 DNS -> admitted s"] = round(time.monotonic() - appeared, 2)
        _wait(lambda: requests_served([t3]) > 0, timeout=20, what="traffic on t3")
        figures["t3 DNS -> first request s"] = round(time.monotonic() - appeared, 2)
        phase("server added to the active slot")
        # 4. A server killed: the slot's other server takes its share.
        os.kill(lab.processes["triton-t1"].pid, signal.SIGKILL)
        time.sleep(3.0)
        phase("a server killed")
        # 5. t3's host cut off, then restored: blue has no server, green takes over.
        lab.net.cut("t3", off=True)
        cut = time.monotonic()
        time.sleep(4.0)
        # The control plane saw it: no ready server left in blue (t1 is dead, t3 cut off).
        blue_while_cut = [e["ready"] for e in _status()["slots"]["blue"]]
        lab.net.cut("t3", off=False)
        _wait(lambda: any(e["ready"] for e in _status()["slots"]["blue"]),
              timeout=30, what="t3 back")
        figures["t3 cut -> back ready s"] = round(time.monotonic() - cut, 2)
        time.sleep(2.0)
        phase("a host cut off and restored")
    finally:
        stats = load.stop()
    phases.pop("_last", None)
    print("netns fleet:", json.dumps({"phases (ok, failed)": phases, **figures,
                                      "total": [stats.ok, stats.failed],
                                      "errors": dict(stats.errors)}))
    assert blue_while_cut == [False, False], blue_while_cut
    for name in ("rollout to promoted", "rollback", "server added to the active slot",
                 "a server killed", "a host cut off and restored"):
        assert phases[name][1] == 0, (name, phases, dict(stats.errors))
    assert stats.ok > 500
    # The DNS server answered the control plane (the real resolver path was used).
    assert f"blue.{ZONE}" in (lab.root / "logs" / "dnsmasq.log").read_text()
