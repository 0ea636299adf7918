"""Seed a state directory: push the first version of each model to the registry, stage
them into both slots' model repositories (digest in each config) and mark them active on
blue. A slot serves the whole set.

Used by the local stack and, as ``python -m turnout.seed``, by docker-compose's one-shot
``seed`` service before the Triton containers start. Idempotent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from triton_slots.artifact import inspect
from triton_slots.delivery.shared import stage_artifact, staged_digest
from triton_slots.registry import ArtifactRecord, LocalRegistry, RegistryBackend, Stage
from triton_slots.routing import SLOT_NAMES


def registry_root(directory: Path) -> Path:
    return directory / "registry"


def slot_repository(directory: Path, slot: str) -> Path:
    return directory / "slots" / slot / "models"


def seed(directory: Path, model: Path, *, version: str | None = None) -> ArtifactRecord:
    """Seed one model (see :func:`seed_all`)."""
    return seed_all(directory, [model], version=version)[0]


def seed_all(directory: Path, models: list[Path], *, version: str | None = None,
             registry: RegistryBackend | None = None) -> list[ArtifactRecord]:
    """Push each model directory (version: ``version`` or the directory's name) into
    ``registry`` (default: the directory's), stage it into both slots and mark it active on
    blue. Model names must be distinct."""
    registry = registry or LocalRegistry(registry_root(directory))
    names = [inspect(m).model_name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two model directories serve the same model name: {duplicates}")
    records = []
    for model, name in zip(models, names, strict=True):
        record = registry.push(model, name=name, version=version or model.name,
                               source=str(model))
        for slot in SLOT_NAMES:
            repository = slot_repository(directory, slot)
            if staged_digest(repository, record.model_name) != record.digest:
                stage_artifact(record, repository)
        if record.stage != Stage.ACTIVE:
            record = registry.set_stage(record.name, record.version, Stage.ACTIVE,
                                        reason="initial version", slot=SLOT_NAMES[0])
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", type=Path, required=True, help="state directory")
    parser.add_argument("--model", type=Path, required=True, action="append",
                        help="Triton model directory (repeat for a set of models)")
    parser.add_argument("--version", default=None, help="registry version (default: dir name)")
    parser.add_argument("--pki", type=Path, default=None,
                        help="also make mTLS certificates for xDS here (turnout.compose_pki)")
    parser.add_argument("--server-host", action="append", default=[],
                        help="a name or address proxies dial the control plane at (repeat)")
    parser.add_argument("--node", action="append", default=[],
                        help="a proxy's node id, NODE or NODE:UID (its files' owner; repeat)")
    args = parser.parse_args(argv)
    for record in seed_all(args.state, args.model, version=args.version):
        print(f"seeded {record.ref} ({record.digest[:12]}) active on {record.slot}")
    if args.pki is not None:
        from turnout.compose_pki import compose_pki

        nodes: dict[str, int | None] = {}
        for spec in args.node:
            node, _, uid = spec.partition(":")
            if uid and not uid.isdigit():
                parser.error(f"--node {spec}: the owner must be a numeric uid")
            nodes[node] = int(uid) if uid else None
        try:
            server, clients = compose_pki(args.pki, server_hosts=tuple(args.server_host),
                                          nodes=nodes)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"xDS certificates: server {server.cert}, proxies {', '.join(clients)}")


if __name__ == "__main__":
    main()
