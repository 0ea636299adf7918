"""Triton slots: pools of real Triton servers (``blue`` and ``green``), their launcher,
health and metrics."""

from triton_slots.routing import SLOT_NAMES
from triton_slots.slot import Endpoint, Slot

__all__ = ["SLOT_NAMES", "Endpoint", "Slot"]
