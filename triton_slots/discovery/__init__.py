"""Where a slot's servers are: one interface, one file per source, :func:`choose` the one
place that picks.

- :mod:`.static` the endpoints the configuration lists (the local stack, fixed hosts);
- :mod:`.dns` a name looked up again on an interval, one A/AAAA record per server (a
  Kubernetes headless Service).

A source only says which servers exist; the control plane decides when one may receive
traffic (after it has been brought up to its slot's model set).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from triton_slots.slot import Endpoint, Slot


class DiscoveryError(RuntimeError):
    """The servers could not be listed now (the message names the source and why); the
    slot keeps the servers it had."""


class ServerSource(Protocol):
    interval_s: float
    #: Whether an operator may edit its list (``turnout slots add-endpoint``).
    editable: bool

    def servers(self) -> tuple[Endpoint, ...]:
        """The servers that exist now (blocking; call off the event loop)."""

    def describe(self) -> str:
        """What status shows for this source."""


Resolver = Callable[[str], list[str]]


def choose(slot: Slot, *, resolve: Resolver | None = None,
           stored: Callable[[], tuple[Endpoint, ...] | None] | None = None) -> ServerSource:
    """DNS when the slot names one (``resolve`` replaces the system resolver in tests),
    else its static endpoints (``stored``: the list an operator set since, if any)."""
    if slot.dns is not None:
        from triton_slots.discovery.dns import DnsServers
        return DnsServers(slot.dns, resolve=resolve)
    from triton_slots.discovery.static import StaticServers
    return StaticServers(slot.endpoints, stored=stored)
