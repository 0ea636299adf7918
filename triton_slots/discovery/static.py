"""The servers a list names: the configuration's, or the list an operator set since
(``turnout slots add-endpoint`` / ``remove-endpoint``), read again every second so every
replica of the control plane follows an edit made on any of them."""

from __future__ import annotations

from collections.abc import Callable

from triton_slots.slot import Endpoint

#: The operator's list for this slot (None: never edited, the configuration's holds);
#: raises DiscoveryError when it cannot be read now.
Stored = Callable[[], tuple[Endpoint, ...] | None]


class StaticServers:
    editable = True

    def __init__(self, endpoints: tuple[Endpoint, ...], *, stored: Stored | None = None
                 ) -> None:
        self.endpoints = tuple(endpoints)
        self._stored = stored
        self._edited = False
        self.interval_s = 1.0 if stored is not None else 3600.0

    def servers(self) -> tuple[Endpoint, ...]:
        listed = self._stored() if self._stored is not None else None
        self._edited = listed is not None
        return self.endpoints if listed is None else listed

    def describe(self) -> str:
        return "static, edited by an operator" if self._edited else "static"
