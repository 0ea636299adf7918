"""Triton slots: pools of real Triton servers (``blue`` and ``green``), their launcher,
health and metrics."""

from triton_slots.slot import SLOT_NAMES, Endpoint, Slot

__all__ = ["SLOT_NAMES", "Endpoint", "Slot"]
