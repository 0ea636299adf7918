"""Seed a state directory: push the first model version to the registry, stage it into
both slots' model repositories (digest in its config) and mark it active on blue.

Used by the local stack and, as ``python -m turnout.seed``, by docker-compose's one-shot
``seed`` service before the Triton containers start. Idempotent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from triton_slots.artifact import inspect
from triton_slots.deploy import stage_artifact
from triton_slots.registry import ArtifactRecord, LocalRegistry
from triton_slots.slot import SLOT_NAMES


def registry_root(directory: Path) -> Path:
    return directory / "registry"


def slot_repository(directory: Path, slot: str) -> Path:
    return directory / "slots" / slot / "models"


def seed(directory: Path, model: Path, *, version: str | None = None) -> ArtifactRecord:
    registry = LocalRegistry(registry_root(directory))
    record = registry.push(model, name=inspect(model).model_name,
                           version=version or model.name, source=str(model))
    for slot in SLOT_NAMES:
        repository = slot_repository(directory, slot)
        if not (repository / record.model_name).exists():
            stage_artifact(record, repository)
    if record.stage != "active":
        record = registry.set_stage(record.name, record.version, "active",
                                    reason="initial version", slot=SLOT_NAMES[0])
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", type=Path, required=True, help="state directory")
    parser.add_argument("--model", type=Path, required=True, help="Triton model directory")
    parser.add_argument("--version", default=None, help="registry version (default: dir name)")
    args = parser.parse_args(argv)
    record = seed(args.state, args.model, version=args.version)
    print(f"seeded {record.ref} ({record.digest[:12]}) active on {record.slot}")


if __name__ == "__main__":
    main()
