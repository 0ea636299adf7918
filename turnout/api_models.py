"""The API's registry routes, so a CLI anywhere (a context) pushes, lists, deploys and
validates through the control plane, which alone reaches the registry and the servers.

    GET  /v1/models                              every version, digest, slot, stage
    GET  /v1/models/<name>/<version>             one, with its last validation report
    PUT  /v1/models/<name>/<version>?source=S&label=K=V
                                                 body: the model directory as a gzip'd tar
                                                 (role operate; at most 256 MiB unpacked)
    POST /v1/models/<name>/<version>/deploy      {"slot", "force", "timeout"} (operate)
    POST /v1/models/<name>/<version>/validate    {"force"} (operate)
"""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

from aiohttp import web

from triton_slots.delivery.repository_api import MAX_ARTIFACT_BYTES
from triton_slots.registry import ArtifactRecord
from turnout.api_common import BadInput, body_of, fields, flag, needs, plane_of, token_of
from turnout.operations import deploy_version, validate_version
from turnout.tokens import Role

#: Files in one uploaded artifact, at most.
MAX_FILES = 10_000
MAX_LABELS = 32


def _record(record: ArtifactRecord) -> dict[str, Any]:
    data = record.as_dict()
    data.pop("path")  # the control plane's own directory: nothing a client can use
    return data


def _ref(request: web.Request) -> tuple[str, str]:
    return request.match_info["name"], request.match_info["version"]


@needs(Role.READ)
async def _list(request: web.Request) -> web.Response:
    registry = plane_of(request).controller.registry
    records = await asyncio.to_thread(registry.list)
    return web.json_response([_record(r) for r in records])


@needs(Role.READ)
async def _show(request: web.Request) -> web.Response:
    registry = plane_of(request).controller.registry
    name, version = _ref(request)
    record = await asyncio.to_thread(registry.get, name, version)
    report = await asyncio.to_thread(registry.report, name, version, "validation")
    return web.json_response({**_record(record), "validation": report})


def _labels(request: web.Request) -> dict[str, str]:
    labels = {}
    given = request.query.getall("label", [])
    if len(given) > MAX_LABELS:
        raise BadInput(f"at most {MAX_LABELS} query parameters 'label', got {len(given)}")
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"query parameter 'label' must be KEY=VALUE, got {item[:60]!r}")
        labels[key] = value
    return labels


@needs(Role.OPERATE)
async def _push(request: web.Request) -> web.Response:
    """Stream the body to a file (no more than the limit), unpack it with tarfile's 'data'
    filter (no links out, no absolute paths, no devices), then push it like a directory."""
    plane = plane_of(request)
    name, version = _ref(request)
    fields(request.query, ("source", "label"))
    source = request.query.get("source", "")
    if len(source) > 500:
        raise BadInput("query parameter 'source' must be at most 500 characters")
    labels = _labels(request)
    if request.content_length is not None and request.content_length > MAX_ARTIFACT_BYTES:
        return _too_large()
    with tempfile.TemporaryDirectory(prefix="turnout-upload-") as scratch:
        upload = Path(scratch) / "artifact.tar.gz"
        size = 0
        with upload.open("wb") as out:
            async for chunk in request.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    return _too_large()
                out.write(chunk)
        if size == 0:
            raise BadInput("the request body must be the model directory as a gzip'd tar "
                           "(`tar -czf - -C DIR .`); it is empty")
        directory = Path(scratch) / name
        await asyncio.to_thread(_unpack, upload, directory)
        record = await asyncio.to_thread(
            plane.controller.registry.push, directory, name=name, version=version,
            source=source or f"uploaded by {token_of(request).name}", labels=labels)
    return web.json_response(_record(record), status=201)


def _too_large() -> web.Response:
    return web.json_response({"error": f"the artifact is over {MAX_ARTIFACT_BYTES >> 20} MiB, "
                                       "the most a deploy carries"}, status=413)


def _unpack(upload: Path, directory: Path) -> None:
    try:
        with tarfile.open(upload, mode="r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise BadInput(f"the artifact has {len(members)} entries; at most {MAX_FILES}")
            unpacked = sum(m.size for m in members if m.isfile())
            if unpacked > MAX_ARTIFACT_BYTES:
                raise BadInput(f"the artifact unpacks to {unpacked >> 20} MiB; at most "
                               f"{MAX_ARTIFACT_BYTES >> 20} MiB")
            directory.mkdir()
            tar.extractall(directory, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BadInput(f"the request body is not a gzip'd tar of a model directory: {exc}"
                       ) from None


@needs(Role.OPERATE, body=True)
async def _deploy(request: web.Request) -> web.Response:
    body = body_of(request)
    fields(body, ("slot", "force", "timeout"))
    slot = body.get("slot")
    if slot is not None and slot not in ("blue", "green"):
        raise BadInput(f"field 'slot' must be blue or green, got {slot!r}")
    force = flag(body, "force")
    timeout = body.get("timeout", 120)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= 600:
        raise BadInput(f"field 'timeout' must be a number of seconds in (0, 600], "
                       f"got {timeout!r}")
    name, version = _ref(request)
    done = await deploy_version(plane_of(request), name, version, slot=slot, force=force,
                                timeout=float(timeout), actor=token_of(request).name)
    return web.json_response(done)


@needs(Role.OPERATE, body=True)
async def _validate(request: web.Request) -> web.Response:
    body = body_of(request)
    fields(body, ("force",))
    name, version = _ref(request)
    done = await validate_version(plane_of(request), name, version,
                                  force=flag(body, "force"), actor=token_of(request).name)
    return web.json_response(done)


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/v1/models", _list),
        web.get("/v1/models/{name}/{version}", _show),
        web.put("/v1/models/{name}/{version}", _push),
        web.post("/v1/models/{name}/{version}/deploy", _deploy),
        web.post("/v1/models/{name}/{version}/validate", _validate),
    ])
