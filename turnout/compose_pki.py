"""Certificates for a control plane and proxies in separate containers (docker-compose's
CA step, run by its one-shot ``seed`` service as ``turnout.seed --pki ...``).

    ROOT/ca/            the CA (ca.pem, ca.key): stays here, never mounted elsewhere
    ROOT/controlplane/  cert.pem key.pem ca.pem: the xDS port's server certificate
                        (names every host the proxies dial)
    ROOT/NODE/          cert.pem key.pem ca.pem: one client certificate per proxy, allowed
                        to claim node id NODE only; mount just this directory into it

Idempotent: what exists is kept (a second ``up`` changes no certificate); a missing file
is made. Keys are 0600, owned by ``owner`` (the proxy's user, for a proxy's) when given.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from xds_server.pki import LocalCA
from xds_server.transport import TlsFiles

SERVER = "controlplane"


def _place(issued_cert: Path, issued_key: Path, ca: LocalCA, target: Path,
           owner: int | None) -> TlsFiles:
    target.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(target / "cert.pem", target / "key.pem", target / "ca.pem")
    shutil.copyfile(issued_cert, files.cert)
    shutil.copyfile(ca.cert, files.ca)
    files.key.touch(mode=0o600)
    os.chmod(files.key, 0o600)
    files.key.write_bytes(issued_key.read_bytes())
    issued_key.unlink()
    issued_cert.unlink()
    if owner is not None:
        for path in (target, files.cert, files.key, files.ca):
            os.chown(path, owner, -1)
    return files


def compose_pki(root: Path, *, server_hosts: tuple[str, ...], nodes: dict[str, int | None]
                ) -> tuple[TlsFiles, dict[str, TlsFiles]]:
    """The server's files and each node's (``nodes``: node id -> owner uid or None)."""
    if not server_hosts:
        raise ValueError("the server certificate needs at least one host name")
    bad = [n for n in nodes if not n or "/" in n or n in ("ca", SERVER) or n.startswith(".")]
    if bad:
        raise ValueError(f"node ids that cannot name a directory here: {bad}")
    ca_dir = root / "ca"
    ca = LocalCA(ca_dir) if (ca_dir / "ca.pem").exists() else LocalCA.create(ca_dir)
    server_dir = root / SERVER
    if (server_dir / "key.pem").exists():
        server = TlsFiles(server_dir / "cert.pem", server_dir / "key.pem", server_dir / "ca.pem")
    else:
        issued = ca.issue_server("server", server_hosts)
        server = _place(issued.cert, issued.key, ca, server_dir, None)
    clients = {}
    for node, owner in nodes.items():
        if (root / node / "key.pem").exists():
            clients[node] = TlsFiles(root / node / "cert.pem", root / node / "key.pem",
                                     root / node / "ca.pem")
            continue
        issued = ca.issue_client(f"client-{node}", (node,))
        clients[node] = _place(issued.cert, issued.key, ca, root / node, owner)
    return server, clients
