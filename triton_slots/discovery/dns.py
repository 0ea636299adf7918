"""Servers found by DNS: every address a name resolves to (A and AAAA) is one server, on
the ports the slot's ``dns`` section gives. A name that does not resolve is an error (the
slot keeps what it had); a name that resolves to nothing new changes nothing."""

from __future__ import annotations

import socket

from triton_slots.discovery import DiscoveryError, Resolver
from triton_slots.slot import DnsName, Endpoint


def system_resolve(name: str) -> list[str]:
    """Every address ``name`` has (the system resolver: /etc/hosts, then DNS)."""
    infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class DnsServers:
    editable = False

    def __init__(self, dns: DnsName, *, resolve: Resolver | None = None) -> None:
        self.dns = dns
        self.interval_s = dns.interval_s
        self._resolve = resolve or system_resolve

    def servers(self) -> tuple[Endpoint, ...]:
        try:
            addresses = self._resolve(self.dns.name)
        except (OSError, UnicodeError) as exc:
            raise DiscoveryError(f"DNS name {self.dns.name!r} does not resolve: {exc}") from exc
        unique = sorted(set(addresses))
        return tuple(self.dns.endpoint(address) for address in unique)

    def describe(self) -> str:
        return f"dns {self.dns.name} every {self.dns.interval_s:g}s"
