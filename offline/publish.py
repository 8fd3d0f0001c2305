"""Publish stage: a staged directory becomes a version, then CURRENT switches to it.

Everything is written under ``<root>/.staging/<id>``; only a complete, checksummed
directory is renamed into ``<root>/versions/``, and only then does CURRENT move. A run
that fails anywhere before that leaves what is published untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from groundrec.shared import versions
from groundrec.shared.manifest import Manifest, verify, write_manifest


def staging_dir(root: Path, version_id: str) -> Path:
    path = Path(root) / versions.STAGING / version_id
    path.mkdir(parents=True, exist_ok=False)
    return path


def publish(root: Path, staged: Path, manifest: Manifest, keep: int = 0) -> Path:
    root = Path(root)
    write_manifest(staged, manifest)
    verify(staged)
    final = root / versions.VERSIONS / manifest.version
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    versions.activate(root, manifest.version)
    if keep:
        versions.gc(root, keep)
    return final


def discard_staging(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)
