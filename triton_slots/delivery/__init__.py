"""How a model version gets onto a Triton server: one interface, one file per way, and
:func:`choose`, the one place that picks.

- :mod:`.shared` (a slot with a ``repository`` directory the control plane shares with its
  servers, as the local stack has): stage the files there, then ask each server to load.
- :mod:`.repository_api` (servers anywhere, nothing shared on disk): the load request
  itself carries the model's config and every file (Triton's model repository API).

Either way the config served carries the artifact's digest (``parameters.turnout_digest``),
which the deploy reads back from every server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from triton_slots.admin import TritonAdmin
from triton_slots.artifact import CONFIG_FILE, parse_config
from triton_slots.registry import ArtifactRecord

DIGEST_PARAMETER = "turnout_digest"
REF_PARAMETER = "turnout_ref"


class DeliveryError(RuntimeError):
    """The artifact cannot be delivered this way (too large, unreadable); says why."""


class Delivery(Protocol):
    name: str

    def prepare(self, record: ArtifactRecord, *, fresh: bool) -> str | None:
        """Make ``record`` ready to load (once per deploy, before any server loads it);
        ``fresh`` redoes any staging even if it looks current. Returns a progress line for
        what was done (None: nothing). Raises :class:`DeliveryError`."""

    def load(self, admin: TritonAdmin, record: ArtifactRecord) -> None:
        """Ask one server to load ``record`` (prepared); raises TritonAdminError."""


def stamped_config(record: ArtifactRecord) -> model_config_pb2.ModelConfig:
    """The artifact's config with its digest and ref written in as parameters."""
    config = parse_config(record.path / CONFIG_FILE)
    config.parameters[DIGEST_PARAMETER].string_value = record.digest
    config.parameters[REF_PARAMETER].string_value = record.ref
    return config


def stamped_config_text(record: ArtifactRecord) -> str:
    return text_format.MessageToString(stamped_config(record))


def choose(repository: Path | None) -> Delivery:
    """Through the shared ``repository`` when the slot has one, else the repository API."""
    if repository is not None:
        from triton_slots.delivery.shared import SharedRepository
        return SharedRepository(repository)
    from triton_slots.delivery.repository_api import RepositoryApi
    return RepositoryApi()
