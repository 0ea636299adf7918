"""Delivery through a model repository directory the control plane shares with the slot's
servers (the local stack): copy the artifact in (an atomic swap), then load it by name."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from triton_slots.admin import TritonAdmin
from triton_slots.artifact import CONFIG_FILE, parse_config
from triton_slots.delivery import DIGEST_PARAMETER, stamped_config_text
from triton_slots.registry import ArtifactRecord


def staged_digest(repository: Path, model_name: str) -> str:
    """The digest of the version staged in ``repository`` for ``model_name`` ("" if none)."""
    path = repository / model_name / CONFIG_FILE
    if not path.exists():
        return ""
    try:
        config = parse_config(path)
    except ValueError:
        return ""
    value = config.parameters.get(DIGEST_PARAMETER)
    return value.string_value if value is not None else ""


def stage_artifact(record: ArtifactRecord, repository: Path) -> None:
    """Copy the artifact into ``repository/<model>`` (atomic swap), digest in its config."""
    repository.mkdir(parents=True, exist_ok=True)
    staging = repository / f".staging-{uuid.uuid4().hex}"
    shutil.copytree(record.path, staging)
    (staging / CONFIG_FILE).write_text(stamped_config_text(record))
    target = repository / record.model_name
    retired = repository / f".old-{uuid.uuid4().hex}"
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


class SharedRepository:
    name = "shared-repository"

    def __init__(self, repository: Path) -> None:
        self.repository = repository

    def prepare(self, record: ArtifactRecord, *, fresh: bool) -> str | None:
        if not fresh and staged_digest(self.repository, record.model_name) == record.digest:
            return None
        stage_artifact(record, self.repository)
        return f"staging {record.ref} ({record.digest[:12]}) into {self.repository}"

    def load(self, admin: TritonAdmin, record: ArtifactRecord) -> None:
        admin.load(record.model_name)
