"""What the rollout driver needs from the control plane: a small interface, so the driver
is tested with fakes (store failures, push timeouts, crashing workers) and never knows
the control plane's object."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from gates.shadow.compare import ShadowStats
from triton_slots.slot import Slot
from turnout.topology import Shadow
from turnout.weights import Weights
from xds_server import Convergence


class TrafficPlane(Protocol):
    """Publishes weights to every proxy and knows the slots. Async-safe on one loop."""

    @property
    def weights(self) -> Weights:
        """The weights published now."""
        ...

    @property
    def ingress_address(self) -> str:
        """Where validation traffic reaches Envoy (``host:port``)."""
        ...

    @property
    def preview_key(self) -> str:
        """The key validation traffic sends to be let through to one slot."""
        ...

    def slot(self, name: str) -> Slot:
        ...

    def deploying(self, name: str) -> AbstractContextManager[None]:
        """Held (from the deploy's thread) while a deploy writes slot ``name``: no server
        joins the slot with the set being replaced meanwhile."""
        ...

    async def apply_weights(self, weights: Weights, *, timeout: float | None = None,
                            quorum: float = 1.0, early: bool = False,
                            shadow: Shadow | None = None) -> Convergence:
        """Publish ``weights`` and ``shadow`` (copies of live requests to a slot, or none;
        an RDS-only change) and wait for the proxies' answers."""
        ...

    def shadow_figures(self) -> ShadowStats | None:
        """What the running shadow copy's comparison saw since it began (None: none)."""
        ...
