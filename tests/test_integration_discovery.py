"""Slots that change while they serve, with real Triton servers that Turnout did not start
as a stack and share no disk with it, a real Envoy and the control plane in-process: a slot
found by a DNS name (the resolver answers from a table the test rewrites; the netns test
does it with a real DNS server). A new server is brought up to the slot's model set and
verified before it gets any traffic; a server gone leaves EDS at once; a name that stops
resolving keeps the last servers. Under load: 0 failed requests throughout."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.live import LoopThread
from triton_slots.admin import TritonAdmin
from triton_slots.deploy import deploy
from triton_slots.launcher import TritonServer, prepare_backends
from triton_slots.loadgen import LoadGenerator
from triton_slots.metrics import requests_served
from triton_slots.procs import free_port
from triton_slots.registry import LocalRegistry, Stage
from triton_slots.slot import DnsName, Endpoint, Slot
from turnout.config import ControlPlaneConfig
from turnout.controlplane import ControlPlane
from turnout.prometheus import TARGETS_FILE
from turnout.proxy import EnvoyProxy
from turnout.tokens import Role, mint
from turnout.weights import Weights

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models" / "classifier"
NAME = "green.pool.test"
HOSTS = ("127.0.0.2", "127.0.0.3")


def _shared_ports() -> tuple[int, int, int]:
    """Three ports free on every address of HOSTS (servers of one DNS name share them)."""
    while True:
        ports = tuple(free_port(HOSTS[0]) for _ in range(3))
        try:
            for host in HOSTS[1:]:
                for port in ports:
                    with socket.socket() as s:
                        s.bind((host, port))
            return ports  # type: ignore[return-value]
        except OSError:
            continue


class Table:
    """The resolver: what the name resolves to now (an exception: it fails)."""

    def __init__(self) -> None:
        self.answer: list[str] | Exception = []

    def __call__(self, name: str) -> list[str]:
        assert name == NAME
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("discovery")
    backends = prepare_backends(root / "backends")
    grpc_port, http_port, metrics_port = _shared_ports()
    servers: dict[str, TritonServer] = {}
    loop = plane = envoy = None
    try:
        for host in ("127.0.0.1", *HOSTS):  # blue's one server, then green's two
            empty = root / host / "models"
            empty.mkdir(parents=True)
            endpoint = None if host == "127.0.0.1" else Endpoint(host, http_port, grpc_port,
                                                                 metrics_port)
            servers[host] = TritonServer.start(
                name=f"triton-{host}", model_repository=empty, backends=backends,
                log_path=root / f"triton-{host}.log", host=host, endpoint=endpoint)
        for server in servers.values():
            server.wait_ready()
        registry = LocalRegistry(root / "registry")
        registry.push(EXAMPLES / "v1", name="classifier", version="v1")
        blue = servers["127.0.0.1"].endpoint
        deploy(registry, "classifier", "v1", slot="blue", endpoints=[blue], repository=None)
        registry.set_stage("classifier", "v1", Stage.ACTIVE, slot="blue")
        table = Table()
        admin, secret = mint("test-admin", Role.ADMIN)
        config = ControlPlaneConfig(
            state_dir=root, tokens=(admin,), ingress_port=free_port(),
            registry_root=str(root / "registry"),
            slots={"blue": Slot("blue", (blue,)),
                   "green": Slot("green", dns=DnsName(NAME, grpc_port, http_port,
                                                      metrics_port, interval_s=0.2))})
        loop = LoopThread()

        async def make() -> ControlPlane:
            made = ControlPlane(config, resolve=table)
            await made.start()
            return made
        plane = loop.run(make())
        envoy = EnvoyProxy.start(node_id="envoy-test", node_cluster=config.group,
                                 xds_host="127.0.0.1", xds_port=plane.xds_port,
                                 work_dir=root, log_dir=root / "logs")
        envoy.wait_ready()
        (root / "admin.token").write_text(secret)
        yield plane, loop, envoy, servers, table, root
    finally:
        if envoy is not None:
            envoy.stop()
        if plane is not None and loop is not None:
            loop.run(plane.stop())
        if loop is not None:
            loop.close()
        for server in servers.values():
            server.stop()


def _admitted(plane: ControlPlane) -> list[str]:
    return [e.grpc_address for e in plane.members.slot("green").endpoints]


def _until(condition, *, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"never: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_servers_join_and_leave_a_serving_slot_without_a_failed_request(fleet):
    plane, loop, _envoy, servers, table, root = fleet
    first, second = (servers[h] for h in HOSTS)
    assert _admitted(plane) == []
    assert plane.status()["discovery"]["green"]["source"] == f"dns {NAME} every 0.2s"
    ingress = f"127.0.0.1:{plane.config.ingress_port}"
    load = LoadGenerator(ingress, model="classifier", concurrency=2, rate=100).start()
    figures = {}
    try:
        time.sleep(0.5)
        # A server appears in DNS: brought up to the set (classifier:v1), then admitted.
        table.answer = [HOSTS[0]]
        figures["first: DNS -> admitted s"] = _until(
            lambda: _admitted(plane) == [first.endpoint.grpc_address], timeout=60,
            what="the first server admitted")
        assert TritonAdmin(first.endpoint).model_ready("classifier")
        assert requests_served([first.endpoint]) == 0, "traffic before admission"
        assert loop.run(plane.set_weights(Weights.with_green(50))).converged
        _until(lambda: requests_served([first.endpoint]) > 20, timeout=10,
               what="traffic on the first server")
        # A second server joins the slot while it serves half the traffic.
        table.answer = [HOSTS[0], HOSTS[1]]
        started = time.monotonic()
        _until(lambda: len(_admitted(plane)) == 2, timeout=60, what="the second server")
        assert requests_served([second.endpoint]) == 0, "traffic before admission"
        _until(lambda: requests_served([second.endpoint]) > 10, timeout=10,
               what="traffic on the second server")
        figures["second: DNS -> first request s"] = time.monotonic() - started
        # Prometheus's targets follow, slot label included.
        import json
        targets = json.loads((root / TARGETS_FILE).read_text())
        assert {"targets": [first.endpoint.metrics_target, second.endpoint.metrics_target],
                "labels": {"slot": "green"}} in targets
        # A server leaves DNS: out of EDS at once, then it may stop.
        table.answer = [HOSTS[1]]
        figures["gone: DNS -> out s"] = _until(
            lambda: _admitted(plane) == [second.endpoint.grpc_address], timeout=5,
            what="the first server dropped")
        time.sleep(0.5)  # Envoy has the new endpoint set
        served = requests_served([first.endpoint])
        time.sleep(0.5)
        assert requests_served([first.endpoint]) == served, "traffic after it left"
        # The name stops resolving: the slot keeps what it had, and says why.
        table.answer = OSError("Name or service not known")
        _until(lambda: plane.status()["discovery"]["green"]["error"] is not None, timeout=5,
               what="the discovery error")
        status = plane.status()["discovery"]["green"]
        assert status["error"] == (f"DNS name {NAME!r} does not resolve: Name or service not "
                                   "known")
        assert status["servers"] == [second.endpoint.grpc_address]
        time.sleep(0.5)
        assert _admitted(plane) == [second.endpoint.grpc_address]
        table.answer = [HOSTS[1]]
        _until(lambda: plane.status()["discovery"]["green"]["error"] is None, timeout=5,
               what="the error cleared")
        assert loop.run(plane.set_weights(Weights.with_green(0))).converged
    finally:
        stats = load.stop()
    print(f"discovery under load: {stats.ok} ok, {stats.failed} failed; "
          + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    assert stats.failed == 0, stats.errors
    assert stats.ok > 500


def test_a_server_that_cannot_take_the_set_is_never_admitted(fleet, tmp_path):
    """A server that cannot be brought up to the set (here the registry's copy was tampered
    with: it is refused, never sent) stays out, with the reason in status."""
    plane, _loop, _envoy, servers, table, _root = fleet
    table.answer = [HOSTS[1]]
    _until(lambda: _admitted(plane) == [servers[HOSTS[1]].endpoint.grpc_address], timeout=30,
           what="the steady state")
    registry = plane.controller.registry
    record = registry.get("classifier", "v1")
    original = (record.path / "1" / "model.py").read_bytes()
    (record.path / "1" / "model.py").write_bytes(original + b"\n# tampered\n")
    try:
        table.answer = [HOSTS[0], HOSTS[1]]
        _until(lambda: plane.status()["discovery"]["green"]["failed"], timeout=30,
               what="the failed bring-up")
        failed = plane.status()["discovery"]["green"]["failed"]
        assert list(failed) == [servers[HOSTS[0]].endpoint.grpc_address]
        assert "refusing to use a corrupted artifact" in next(iter(failed.values())), failed
        assert _admitted(plane) == [servers[HOSTS[1]].endpoint.grpc_address]
    finally:
        (record.path / "1" / "model.py").write_bytes(original)
    # Mended: the next look admits it.
    _until(lambda: len(_admitted(plane)) == 2, timeout=30, what="admission after the fix")
    assert plane.status()["discovery"]["green"]["failed"] == {}


def _cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from turnout.cli import main as cli
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_an_operator_adds_and_removes_servers_of_a_serving_slot_through_the_cli(
        fleet, tmp_path, monkeypatch):
    """`turnout slots` against the running control plane (over a context, as from another
    host): a server added to the slot that takes all the traffic gets the slot's model set
    and only then traffic; one Turnout cannot manage is refused, naming why; a server
    removed gets no more traffic; edits that would break a slot are refused. Under load,
    0 failed requests."""
    plane, _loop, _envoy, servers, _table, root = fleet
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    backends = prepare_backends(tmp_path / "backends")
    extra: dict[str, TritonServer] = {}
    try:
        for host, control in (("127.0.0.4", "explicit"), ("127.0.0.5", "none")):
            (tmp_path / host).mkdir()
            extra[host] = TritonServer.start(
                name=f"triton-{host}", model_repository=tmp_path / host, backends=backends,
                log_path=tmp_path / f"triton-{host}.log", host=host, model_control=control)
        for server in extra.values():
            server.wait_ready()
        code, output = _cli("context", "add", "fleet", "--api",
                            f"http://127.0.0.1:{plane.api_port}",
                            "--token-file", str(root / "admin.token"))
        assert code == 0, output
        new, unmanaged = extra["127.0.0.4"].endpoint, extra["127.0.0.5"].endpoint
        blue = servers["127.0.0.1"].endpoint
        ports = ["--grpc-port", str(new.grpc_port), "--http-port", str(new.http_port),
                 "--metrics-port", str(new.metrics_port)]
        load = LoadGenerator(f"127.0.0.1:{plane.config.ingress_port}", model="classifier",
                             concurrency=2, rate=100).start()
        try:
            time.sleep(0.5)
            started = time.monotonic()
            code, output = _cli("slots", "add-endpoint", "blue", "127.0.0.4", *ports,
                                "--context", "fleet")
            admitted_s = time.monotonic() - started
            assert code == 0, output
            assert output.splitlines()[0] == (f"added {new.grpc_address} to slot blue; it "
                                              "gets the slot's models before any traffic")
            assert output.splitlines()[-1] == f"  {new.grpc_address}: serving"
            assert TritonAdmin(new).model_ready("classifier")
            _until(lambda: requests_served([new]) > 20, timeout=10,
                   what="traffic on the added server")
            # Refused, each naming why, nothing changed.
            for args, words in (
                (("blue", "127.0.0.4", *ports),
                 f"{new.grpc_address} is already a server of slot blue"),
                (("green", "127.0.0.9"), f"slot green's servers come from dns {NAME}"),
                (("blue", HOSTS[1], "--grpc-port", str(servers[HOSTS[1]].endpoint.grpc_port)),
                 f"{servers[HOSTS[1]].endpoint.grpc_address} is a server of slot green"),
                (("blue", "not a host"), "field 'host' must be a DNS name or an IP address"),
                (("nowhere", "127.0.0.9"), "no slot 'nowhere' here; slots: blue, green"),
            ):
                code, output = _cli("slots", "add-endpoint", *args, "--context", "fleet")
                assert code == 1 and words in output, (args, output)
            # A server in another model-control mode: refused before any model reaches it.
            code, output = _cli(
                "slots", "add-endpoint", "blue", "127.0.0.5", "--grpc-port",
                str(unmanaged.grpc_port), "--http-port", str(unmanaged.http_port),
                "--metrics-port", str(unmanaged.metrics_port), "--context", "fleet")
            assert code == 1, output
            assert "explicit model control is off: start tritonserver with " \
                   "--model-control-mode=explicit" in output, output
            code, output = _cli("slots", "list", "--context", "fleet")
            assert code == 0, output
            assert f"  {new.grpc_address:<28} serving" in output, output
            assert f"  {unmanaged.grpc_address:<28} failed       " in output, output
            code, output = _cli("slots", "remove-endpoint", "blue", unmanaged.grpc_address,
                                "--context", "fleet")
            assert code == 0 and "2 server(s) left" in output, output
            # The added server leaves: no traffic after it is out of EDS.
            code, output = _cli("slots", "remove-endpoint", "blue", new.grpc_address,
                                "--context", "fleet")
            assert code == 0, output
            _until(lambda: [e.grpc_address for e in plane.members.slot("blue").endpoints]
                   == [blue.grpc_address], timeout=5, what="the server out of the slot")
            time.sleep(0.5)
            served = requests_served([new])
            time.sleep(0.5)
            assert requests_served([new]) == served, "traffic after it was removed"
            code, output = _cli("slots", "remove-endpoint", "blue", blue.grpc_address,
                                "--context", "fleet")
            assert code == 1 and "is the last server of slot blue, which takes 100% of the " \
                                 "traffic" in output, output
            code, output = _cli("slots", "remove-endpoint", "blue", "127.0.0.9:1",
                                "--context", "fleet")
            assert code == 1 and "127.0.0.9:1 is not a server of slot blue (its servers: " \
                                 f"{blue.grpc_address})" in output, output
        finally:
            stats = load.stop()
        print(f"slots by hand under load: {stats.ok} ok, {stats.failed} failed; "
              f"add-endpoint -> serving {admitted_s:.2f} s")
        assert stats.failed == 0, stats.errors
        history = plane.store.history()
        assert [(e.kind, e.actor, e.message) for e in history if e.kind == "servers"] == [
            ("servers", "test-admin", f"server {new.grpc_address} added to slot blue"),
            ("servers", "test-admin", f"server {unmanaged.grpc_address} added to slot blue"),
            ("servers", "test-admin", f"server {unmanaged.grpc_address} removed from slot "
                                      "blue"),
            ("servers", "test-admin", f"server {new.grpc_address} removed from slot blue")]
    finally:
        for server in extra.values():
            server.stop()
