"""Operators' edits of a slot's server list (``turnout slots``, ``/v1/slots``).

An edit is checked against both slots (a server serves one slot, once) and the traffic (the
last server of a slot that takes traffic stays), stored with its audit entry in the state
store (every replica reads it there within a second), then followed at once: a server added
is brought up to the slot's model set and checked before EDS lists it; a server removed
leaves EDS at once. The configuration's list holds until the first edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from triton_slots.discovery import DiscoveryError
from triton_slots.members import Members, MembershipError
from triton_slots.slot import Endpoint
from turnout.store import Store, StoreUnavailable
from turnout.weights import Weights


class SlotServers:
    def __init__(self, store: Store) -> None:
        self._store = store

    def stored(self, slot: str) -> tuple[Endpoint, ...] | None:
        """The list an operator set for ``slot`` (None: never edited); read by discovery
        every second, so a store that cannot answer keeps the servers the slot has."""
        try:
            listed = self._store.slot_servers().get(slot)
        except (StoreUnavailable, *self._store.ERRORS) as exc:
            raise DiscoveryError(f"the state store cannot list slot {slot}'s servers now: "
                                 f"{exc}") from exc
        return None if listed is None else tuple(Endpoint.from_dict(e) for e in listed)

    def add(self, members: Members, slot: str, endpoint: Endpoint, *, actor: str) -> None:
        listed = members.edited(slot, add=endpoint)
        self._write(members, slot, listed, actor=actor,
                    message=f"server {endpoint.grpc_address} added to slot {slot}")

    def remove(self, members: Members, slot: str, address: str, *, actor: str,
               weights: Weights) -> None:
        listed = members.edited(slot, remove=address)
        share = weights.as_dict().get(slot, 0)
        if not listed and share > 0:
            raise MembershipError(f"{address} is the last server of slot {slot}, which takes "
                                  f"{share}% of the traffic: move the traffic first "
                                  "(`turnout traffic`) or add a server")
        self._write(members, slot, listed, actor=actor,
                    message=f"server {address} removed from slot {slot}")

    def _write(self, members: Members, slot: str, listed: tuple[Endpoint, ...], *,
               actor: str, message: str) -> None:
        self._store.set_slot_servers(slot, [e.as_dict() for e in listed], actor=actor,
                                     message=message)
        members.listed(slot, listed)


def describe(members: Members, weights: Weights, ready: Callable[[Endpoint], bool]
             ) -> dict[str, Any]:
    """What ``GET /v1/slots`` answers: each slot's source, weight and servers, each with
    its state (``serving`` once admitted and ready) and the reason it is not serving."""
    shares = weights.as_dict()
    described = members.describe()
    slots: dict[str, Any] = {}
    for name in sorted(members.slots):
        rows = []
        for endpoint, state, reason in members.servers(name):
            if state == "admitted":
                state, reason = ("serving", "") if ready(endpoint) else (
                    "not ready", "admitted, failing its health checks")
            rows.append({"endpoint": endpoint.grpc_address, **endpoint.as_dict(),
                         "state": state, "reason": reason})
        slots[name] = {"source": described[name]["source"], "editable": members.editable(name),
                       "weight": shares.get(name, 0), "error": described[name]["error"],
                       "servers": rows}
    return slots
