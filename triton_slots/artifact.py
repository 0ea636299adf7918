"""Triton model artifacts: a model directory (``config.pbtxt`` and version directories).

Checked before anything accepts one: the config must parse (errors give file, line and
column), name a backend or platform, and have version directories with files. The digest
is a SHA-256 over relative paths and contents, ignoring Python caches.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from triton_slots.signature import ModelSignature

CONFIG_FILE = "config.pbtxt"
_IGNORED_DIRS = {"__pycache__"}
_IGNORED_SUFFIXES = {".pyc"}


class ArtifactError(ValueError):
    """A model directory that Triton could not serve; the message says file and line."""


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    model_name: str
    backend: str
    versions: tuple[int, ...]
    max_batch_size: int
    digest: str


def artifact_files(root: Path) -> list[Path]:
    """The files that make up the artifact, sorted, relative to ``root``."""
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in _IGNORED_DIRS for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in _IGNORED_SUFFIXES:
            files.append(relative)
    return files


def artifact_size(root: Path) -> int:
    """Bytes in the artifact's files."""
    return sum((root / f).stat().st_size for f in artifact_files(root))


def pack(root: Path) -> bytes:
    """The artifact's files as a gzip'd tar, paths relative to ``root`` (what the shared
    registry stores and ``PUT /v1/models/...`` takes)."""
    buffer = io.BytesIO()
    # dereference: a linked file travels as its content (a link would point nowhere there)
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, dereference=True) as tar:
        for relative in artifact_files(root):
            tar.add(root / relative, arcname=relative.as_posix(), recursive=False)
    return buffer.getvalue()


def digest_of(root: Path) -> str:
    sha = hashlib.sha256()
    for relative in artifact_files(root):
        sha.update(relative.as_posix().encode())
        sha.update(b"\0")
        with open(root / relative, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        sha.update(b"\0")
    return sha.hexdigest()


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing (every Triton model needs {CONFIG_FILE})") from exc
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not text: {exc}") from exc
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        # The parser wanted a separator or a closing bracket, or met a closing bracket it
        # did not expect: name the bracket left open.
        hint = _unclosed(text, line) if _BRACKET_TROUBLE.search(str(exc)) else ""
        raise ArtifactError(f"{path}:{line}:{column}: {_message(exc)}"
                            + (f" ({hint})" if hint else "")) from exc
    return config


_CLOSING = {"[": "]", "{": "}", "<": ">"}
_BRACKET_TROUBLE = re.compile(r'Expected "[,\]}>]"|got [\]}>]')


def _unclosed(text: str, before: int) -> str:
    """The bracket still open where the parser gave up (the usual cause: a missing ']' or
    '}' a few lines above), or "" when every bracket was closed."""
    opened: list[tuple[str, int]] = []
    quote = ""
    for number, line in enumerate(text.splitlines()[:before - 1], 1):
        escaped = False
        for char in line:
            if quote:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == quote:
                    quote = ""
            elif char in "\"'":
                quote = char
            elif char == "#":
                break
            elif char in _CLOSING:
                opened.append((char, number))
            elif opened and char == _CLOSING[opened[-1][0]]:
                opened.pop()
    if not opened or before <= opened[-1][1]:
        return ""
    char, number = opened[-1]
    return f"the '{char}' opened at line {number} is not closed before line {before}"


def _message(exc: text_format.ParseError) -> str:
    text = str(exc)
    prefix = f"{exc.GetLine()}:{exc.GetColumn()} : "
    return text[len(prefix):] if text.startswith(prefix) else text


def inspect(root: Path) -> ArtifactInfo:
    """Check a model directory and describe it; raises :class:`ArtifactError`."""
    if not root.is_dir():
        raise ArtifactError(f"{root}: not a directory")
    config_path = root / CONFIG_FILE
    config = parse_config(config_path)
    if not config.name:
        raise ArtifactError(f"{config_path}: field 'name' is required")
    if not (config.backend or config.platform):
        raise ArtifactError(f"{config_path}: one of 'backend' or 'platform' is required")
    versions = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise ArtifactError(
            f"{root}: no version directories (expected at least one numbered directory, "
            f"such as {root / '1'})"
        )
    for version in versions:
        vdir = root / str(version)
        if not artifact_files(vdir):
            raise ArtifactError(f"{vdir}: version directory is empty")
        if config.backend == "python" and not (vdir / "model.py").exists():
            raise ArtifactError(f"{vdir / 'model.py'}: missing (backend is 'python')")
    return ArtifactInfo(
        path=root,
        model_name=config.name,
        backend=config.backend or config.platform,
        versions=tuple(versions),
        max_batch_size=config.max_batch_size,
        digest=digest_of(root),
    )


def artifact_signature(root: Path) -> ModelSignature:
    """The signature declared by an artifact's ``config.pbtxt`` (what Triton will serve,
    unless the backend auto-completes the config)."""
    return ModelSignature.from_protobuf(parse_config(root / CONFIG_FILE))
