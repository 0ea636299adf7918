"""Delivery with nothing shared on disk: Triton's model repository API loads a model whose
config (JSON) and files (one ``file:<relative path>`` parameter each) come in the load
request itself, into a server started on any (even empty) repository with explicit model
control.

Over gRPC (``RepositoryModelLoad``), where files travel as raw bytes: Triton 2.51's HTTP
server crashed (SIGSEGV) on a load request of about 4 MiB (a 3 MiB file, base64-coded),
while over gRPC a 200 MiB artifact deployed in 5.3 s here (BENCHMARKS.md section 9). The
files are read once per deploy and sent to every server."""

from __future__ import annotations

import tritonclient.grpc as triton_grpc
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from triton_slots.admin import GRPC_ADMIN_KEY_HEADER, TritonAdmin
from triton_slots.artifact import CONFIG_FILE, artifact_files
from triton_slots.delivery import DeliveryError, stamped_config
from triton_slots.registry import ArtifactRecord

#: The largest artifact sent in one load request. The control plane holds it about three
#: times over while sending (200 MiB: 587 MiB of RSS, BENCHMARKS.md section 9).
MAX_ARTIFACT_BYTES = 256 << 20


def payload(record: ArtifactRecord, *, limit: int | None = None
            ) -> tuple[str, dict[str, bytes]]:
    """The load request's config (JSON, digest stamped in) and files (``file:<path>`` ->
    bytes, every file of the version directories). Refuses an artifact over ``limit`` bytes
    (default MAX_ARTIFACT_BYTES), naming both sizes, before reading any file."""
    limit = MAX_ARTIFACT_BYTES if limit is None else limit
    files = [f for f in artifact_files(record.path) if f.as_posix() != CONFIG_FILE]
    size = sum((record.path / f).stat().st_size for f in files)
    if size > limit:
        raise DeliveryError(
            f"{record.ref} is {size / 2**20:.1f} MiB; the repository API carries at most "
            f"{limit / 2**20:.0f} MiB per model (triton_slots.delivery.repository_api."
            "MAX_ARTIFACT_BYTES): give the slot a shared repository for larger models")
    config = json_format.MessageToJson(stamped_config(record),
                                       preserving_proto_field_name=True)
    return config, {f"file:{f.as_posix()}": (record.path / f).read_bytes() for f in files}


class RepositoryApi:
    name = "repository-api"

    def __init__(self, *, limit: int | None = None) -> None:
        self.limit = MAX_ARTIFACT_BYTES if limit is None else limit
        self._payloads: dict[str, tuple[str, dict[str, bytes]]] = {}

    def prepare(self, record: ArtifactRecord, *, fresh: bool) -> str | None:
        if not fresh and record.digest in self._payloads:
            return None
        self._payloads[record.digest] = config, files = payload(record, limit=self.limit)
        size = sum(len(b) for b in files.values()) + len(config)
        return (f"sending {record.ref} ({record.digest[:12]}) over the repository API "
                f"({size / 2**20:.1f} MiB per server)")

    def load(self, admin: TritonAdmin, record: ArtifactRecord) -> None:
        config, files = self._payloads[record.digest]
        key = admin.key
        client = triton_grpc.InferenceServerClient(admin.endpoint.grpc_address)
        try:
            client.load_model(record.model_name, config=config, files=files,
                              headers={GRPC_ADMIN_KEY_HEADER: key} if key else None,
                              client_timeout=admin.timeout)
        except InferenceServerException as exc:
            raise admin.refused(f"load {record.model_name!r}", str(exc.message())) from exc
        finally:
            client.close()
