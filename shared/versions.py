"""Published artifact versions: ``<root>/versions/<id>/`` plus a ``<root>/CURRENT`` pointer.

The pointer is a one-line text file replaced atomically (write + rename), so a reader
sees either the old version or the new one, never a half-written state.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

VERSIONS = "versions"
CURRENT = "CURRENT"
STAGING = ".staging"


def new_version_id() -> str:
    """Sortable by creation time (microseconds), unique across writers."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:6]


def created_at(version_id: str) -> float | None:
    """The publication time (Unix seconds) encoded in a version id, or None for another name."""
    try:
        return datetime.strptime(version_id.split("-")[0], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def list_versions(root: str | Path) -> list[str]:
    d = Path(root) / VERSIONS
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and (p / "manifest.json").is_file())


def is_uri(root: str | Path) -> bool:
    """An object-store (or other fsspec) location rather than a local folder."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def current_version(root: str | Path) -> str | None:
    if is_uri(root):
        import fsspec

        try:
            with fsspec.open(f"{str(root).rstrip('/')}/{CURRENT}", "rt") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None
    pointer = Path(root) / CURRENT
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def current_path(root: str | Path) -> Path:
    vid = current_version(root)
    if vid is None:
        raise FileNotFoundError(f"no published version in {root}: run `groundrec offline run --out {root}` first")
    path = Path(root) / VERSIONS / vid
    if not path.is_dir():
        raise FileNotFoundError(f"{root}/{CURRENT} names version {vid}, which does not exist")
    return path


def activate(root: str | Path, version_id: str) -> None:
    """Point CURRENT at an existing version, atomically."""
    root = Path(root)
    if version_id not in list_versions(root):
        raise ValueError(f"no published version {version_id!r} in {root}; have {list_versions(root)}")
    tmp = root / f".{CURRENT}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(version_id + "\n")
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, root / CURRENT)


def gc(root: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond ``keep``; never the one CURRENT names."""
    current = current_version(root)
    old = [v for v in list_versions(root) if v != current]
    doomed = old[: max(0, len(old) - (keep - 1))]
    for v in doomed:
        shutil.rmtree(Path(root) / VERSIONS / v)
    return doomed
