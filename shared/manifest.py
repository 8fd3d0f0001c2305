"""The manifest of a published version: what it holds and the checksums that vouch for it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    version: str
    created_at: str
    code_version: str
    models: dict
    prompt: dict
    text_template: str
    dim: int
    counts: dict
    index: dict
    encoder_export: dict | None = None
    timings_s: dict
    files: dict[str, FileEntry] = {}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksum_tree(root: Path) -> dict[str, FileEntry]:
    root = Path(root)
    return {str(p.relative_to(root)): FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(directory: Path, manifest: Manifest) -> None:
    manifest.files = checksum_tree(directory)
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: not a published groundrec version")
    return Manifest.model_validate_json(path.read_text())


def verify(directory: Path) -> Manifest:
    """Raise ValueError naming every file that is missing or whose checksum does not match."""
    manifest = read_manifest(directory)
    problems = []
    for rel, entry in manifest.files.items():
        p = Path(directory) / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != entry.bytes or sha256_file(p) != entry.sha256:
            problems.append(f"{rel}: checksum mismatch")
    if problems:
        raise ValueError(f"version {directory} does not match its manifest: {'; '.join(problems)}")
    return manifest
