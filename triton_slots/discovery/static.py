"""The servers the configuration lists: they never change by themselves."""

from __future__ import annotations

from triton_slots.slot import Endpoint


class StaticServers:
    interval_s = 3600.0

    def __init__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.endpoints = tuple(endpoints)

    def servers(self) -> tuple[Endpoint, ...]:
        return self.endpoints

    def describe(self) -> str:
        return f"static ({len(self.endpoints)} servers)"
