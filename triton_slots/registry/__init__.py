"""The model registry: versioned Triton model artifacts with digests, slot and stage tags.

:class:`RegistryBackend` is the interface; :func:`open_registry` the one place that picks an
implementation: :class:`LocalRegistry` (a directory plus SQLite, the embedded default) or
``postgresql.PostgresRegistry`` (the database control-plane replicas share: no shared
directory). Another shared store (MLflow's registry with aliases, S3) would implement the
same protocol.
"""

from pathlib import Path

from triton_slots.registry.backend import (
    STAGES,
    ArtifactExistsError,
    ArtifactNotFoundError,
    ArtifactRecord,
    CorruptArtifactError,
    RegistryBackend,
    RegistryError,
    Stage,
    StageTransitionError,
    parse_ref,
)
from triton_slots.registry.local import LocalRegistry


def open_registry(store: str, root: Path, *, cache: Path | None = None) -> RegistryBackend:
    """The registry beside the control plane's state ``store``: with a PostgreSQL store
    (``postgresql://...``) the same database (files unpacked into ``cache``, default
    ``root/cache``), else the directory ``root``."""
    if store.startswith(("postgresql://", "postgres://")):
        from triton_slots.registry.postgresql import PostgresRegistry
        return PostgresRegistry(store, cache or root / "cache")
    return LocalRegistry(root)

__all__ = [
    "STAGES",
    "ArtifactExistsError",
    "ArtifactNotFoundError",
    "ArtifactRecord",
    "CorruptArtifactError",
    "LocalRegistry",
    "RegistryBackend",
    "RegistryError",
    "Stage",
    "StageTransitionError",
    "open_registry",
    "parse_ref",
]
