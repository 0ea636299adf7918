"""docker-compose's mutual TLS, run for real where no Docker engine exists: the seed's CA
step (``turnout.seed --pki`` with compose's own arguments) makes the files; a real Envoy
started from ``examples/compose/envoy.yaml`` (its addresses and the certificate mount
moved to this machine, nothing else changed) gets its configuration from an ADS server
serving with the control plane's files and its mTLS identity rule. The access-log stream
rides the same cluster, so it is covered by the same handshake."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml

from tests.xds_fakes import GROUP, snapshot
from triton_slots.procs import ManagedProcess, free_port
from turnout.proxy import envoy_binary
from xds_server import AdsServer, SnapshotCache
from xds_server.server import SERVER_OPTIONS
from xds_server.transport import TlsFiles, choose

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def _seed_command() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]["seed"]["command"]


def _run_ca_step(state: Path) -> None:
    """The seed's command as compose gives it, with /state and /app moved here."""
    argv = [a.replace("/state", str(state)).replace("/app/", f"{ROOT}/")
            for a in _seed_command()]
    assert argv[0] == "turnout.seed"
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_ca_step_gives_each_container_only_what_it_needs(tmp_path):
    _run_ca_step(tmp_path)
    pki = tmp_path / "pki"
    assert sorted(p.name for p in pki.iterdir()) == ["ca", "controlplane", "envoy-0"]
    envoy = pki / "envoy-0"
    assert sorted(p.name for p in envoy.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert stat.S_IMODE(os.stat(envoy / "key.pem").st_mode) == 0o600
    assert os.stat(envoy / "key.pem").st_uid == 101  # Envoy's user in its image
    assert stat.S_IMODE(os.stat(pki / "ca" / "ca.key").st_mode) == 0o600
    config = json.loads((ROOT / "examples/compose/controlplane.json").read_text())
    assert config["tls"] == {f: f"/state/pki/controlplane/{f}.pem" for f in ("cert", "key",
                                                                               "ca")}
    first = (envoy / "cert.pem").read_bytes()
    _run_ca_step(tmp_path)  # a second `docker compose up`: nothing is re-issued
    assert (envoy / "cert.pem").read_bytes() == first


def test_envoy_from_the_compose_bootstrap_gets_its_config_over_mtls(tmp_path):
    _run_ca_step(tmp_path)
    pki = tmp_path / "pki"
    bootstrap = (ROOT / "examples/compose/envoy.yaml").read_text()
    xds_port, admin_port = free_port(), free_port()
    moved = (bootstrap.replace("/etc/envoy/pki", str(pki / "envoy-0"))
             .replace("address: 172.30.1.10, port_value: 18000",
                      f"address: 127.0.0.1, port_value: {xds_port}")
             .replace("address: 172.30.1.11, port_value: 9901",
                      f"address: 127.0.0.1, port_value: {admin_port}"))
    assert moved.count("127.0.0.1") == 2, "the compose bootstrap's addresses changed"
    (tmp_path / "envoy.yaml").write_text(moved)
    files = TlsFiles(pki / "controlplane" / "cert.pem", pki / "controlplane" / "key.pem",
                     pki / "controlplane" / "ca.pem")

    async def main() -> dict:
        cache = SnapshotCache()
        cache.set_snapshot(GROUP, snapshot(0))
        transport = choose(files)
        ads = AdsServer(cache, default_group=GROUP, refusal=transport.refusal)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((ads.handler(),))
        transport.bind(server, f"127.0.0.1:{xds_port}")
        await server.start()
        envoy = ManagedProcess.spawn(
            "envoy compose", [envoy_binary(), "-c", str(tmp_path / "envoy.yaml"),
                              "--disable-hot-restart", "--concurrency", "1"],
            log_path=tmp_path / "envoy.log")
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                proxies = cache.status(GROUP)["proxies"]
                if any(p["node"] == "envoy-0" and p["in_sync"] for p in proxies):
                    return proxies[0]
                envoy.check_alive()
                await asyncio.sleep(0.1)
            raise AssertionError((tmp_path / "envoy.log").read_text()[-3000:])
        finally:
            envoy.stop()
            await server.stop(None)

    proxy = asyncio.run(main())
    assert proxy["node"] == "envoy-0" and set(proxy["acked"]) == {"cds", "eds", "lds", "rds"}
