"""Other hosts on this machine: Linux network namespaces on a bridge, made by a test and
always removed (processes in them killed, links, bridge and /etc/netns files deleted), also
when the test fails. Addresses are the test's own (10.213.N.0/24, N from the pid), reached
only from this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=20)


@dataclass
class Host:
    name: str      # the namespace
    address: str   # its address on the bridge
    link: str      # the bridge side of its veth pair (down: the host is cut off)

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *command]


@dataclass
class Network:
    prefix: str
    subnet: str  # "10.213.N"
    bridge: str
    hosts: dict[str, Host] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Network:
        if os.geteuid() != 0:
            raise RuntimeError("network namespaces need root (`ip netns add`)")
        tag = os.getpid() % 200
        net = cls(prefix=f"tt{tag}", subnet=f"10.213.{tag + 20}", bridge=f"tt{tag}br")
        net.remove()  # leftovers of an earlier run with the same pid
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        return net

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def add(self, name: str, *, nameserver: str | None = None) -> Host:
        index = len(self.hosts) + 1
        ns = f"{self.prefix}-{name}"
        outside, inside = f"{self.prefix}h{index}", f"{self.prefix}n{index}"
        host = Host(ns, f"{self.subnet}.{10 + index}", outside)
        self.hosts[name] = host
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("link", "set", inside, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", self.gateway)
        # `ip netns exec` mounts these over /etc/resolv.conf and /etc/hosts in the namespace.
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n")
        (etc / "resolv.conf").write_text(f"nameserver {nameserver or self.gateway}\n")
        return host

    def cut(self, name: str, *, off: bool) -> None:
        _ip("link", "set", self.hosts[name].link, "down" if off else "up")

    def remove(self) -> None:
        """Kill every process in the namespaces, delete them, their links and files."""
        listed = _ip("netns", "list", check=False).stdout.split()
        for ns in [n for n in listed if n.startswith(f"{self.prefix}-")]:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        links = _ip("-o", "link", "show", check=False).stdout
        for line in links.splitlines():
            dev = line.split(":")[1].strip().split("@")[0]
            if dev.startswith(self.prefix):
                _ip("link", "del", dev, check=False)
