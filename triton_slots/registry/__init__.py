"""The model registry: versioned Triton model artifacts with digests, slot and stage tags.

:class:`RegistryBackend` is the interface; :class:`LocalRegistry` (a directory plus SQLite)
is the embedded default. A shared store (MLflow's registry with aliases, S3) implements
the same protocol.
"""

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
    "parse_ref",
]
