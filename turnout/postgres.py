"""A real, private PostgreSQL (Debian's ``postgresql`` package) for the local stack and
the tests: a throw-away cluster on loopback, like the stack's Prometheus.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user
(``runuser``), in a directory of its own under the system temp dir (the caller's
directories may not be reachable by that user); the server's log goes where the caller
says. Trust authentication on 127.0.0.1 only; the database and user are ``turnout``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from triton_slots.procs import ManagedProcess, ProcessError, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_binary(name: str) -> str:
    path = PG_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ProcessError(f"{name} not found: run `make postgresql` "
                           "(apt-get install -y --no-install-recommends postgresql)")
    return found


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    """A running cluster: ``url`` is what the control planes are given."""

    port: int
    data_dir: Path
    process: ManagedProcess
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"postgresql://turnout@{self.host}:{self.port}/turnout"

    @classmethod
    def start(cls, *, log_path: Path, port: int = 0, timeout: float = 30.0,
              host: str = "127.0.0.1", trust: str = "") -> PostgresServer:
        """``host``: the address it listens on; ``trust``: a network (``10.1.2.0/24``) whose
        clients it also trusts, besides loopback (tests of other hosts)."""
        port = port or free_port(host)
        data_dir = Path(tempfile.mkdtemp(prefix="turnout-pg-"))
        try:
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(data_dir, owner.pw_uid, owner.pw_gid)
            subprocess.run(_as_owner([pg_binary("initdb"), "-D", str(data_dir), "-A", "trust",
                                      "-U", "turnout", "--no-sync"]),
                           check=True, capture_output=True, timeout=60)
            if trust:
                with open(data_dir / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {trust} trust\n")
            process = ManagedProcess.spawn("postgresql", _as_owner([
                pg_binary("postgres"), "-D", str(data_dir), "-p", str(port),
                "-k", str(data_dir), "-c", f"listen_addresses={host}",
                "-c", "fsync=off", "-c", "max_connections=200",
                # A client cut off loses its session (and the leader its lock) in seconds.
                "-c", "tcp_keepalives_idle=1", "-c", "tcp_keepalives_interval=1",
                "-c", "tcp_keepalives_count=3", "-c", "tcp_user_timeout=3000"]),
                log_path=log_path)
        except (OSError, KeyError, subprocess.SubprocessError) as exc:
            shutil.rmtree(data_dir, ignore_errors=True)
            detail = getattr(exc, "stderr", b"") or b""
            raise ProcessError(f"cannot start PostgreSQL: {exc} {detail.decode()[-500:]}"
                               ) from exc
        server = cls(port, data_dir, process, host)
        try:
            server._create_database(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _create_database(self, timeout: float) -> None:
        """Wait until the server takes connections, then create the ``turnout`` database."""
        import psycopg

        deadline = time.monotonic() + timeout
        admin = f"postgresql://turnout@{self.host}:{self.port}/postgres"
        while True:
            self.process.check_alive()
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE DATABASE turnout")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ProcessError(f"PostgreSQL on {self.port} not ready within "
                                       f"{timeout:.0f} s: {exc}") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, not waited for), then the files."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        self.process.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
