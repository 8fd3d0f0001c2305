"""Loading a published artifact version for serving: verified against its manifest."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from groundrec.shared import versions
from groundrec.shared.manifest import MANIFEST, Manifest, verify


class VersionError(ValueError):
    """A version that online must refuse; the message says why."""


@dataclass
class LoadedVersion:
    path: Path
    manifest: Manifest
    index: faiss.Index
    items: pa.Table
    vectors: np.ndarray
    item_ids: list[str]
    row_of: dict[str, int]


def fetch_version(root: str, version_id: str, cache_dir: Path) -> Path:
    """Copy a version from an fsspec location (s3://, gs://, ...) into a local folder, once:
    FAISS and onnxruntime read local files. The copy is verified like any version."""
    import fsspec

    local = Path(cache_dir) / version_id
    if (local / MANIFEST).is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    fs, base = fsspec.core.url_to_fs(str(root).rstrip("/"))
    source = f"{base}/{versions.VERSIONS}/{version_id}"
    if not fs.exists(f"{source}/{MANIFEST}"):
        raise VersionError(f"{root} has no version {version_id} (no {MANIFEST})")
    tmp = local.parent / f".{version_id}.{uuid.uuid4().hex}"
    tmp.mkdir()
    for remote in fs.find(source):
        target = tmp / remote[len(source):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    os.replace(tmp, local)
    return local


def default_cache_dir(root: str) -> Path:
    return Path(tempfile.gettempdir()) / "groundrec-versions" / hashlib.sha256(str(root).encode()).hexdigest()[:12]


def load_version(path: str | Path, cache_dir: Path | None = None) -> LoadedVersion:
    """Load a version directory, or the CURRENT one of an artifacts root (a local folder or
    an fsspec URI, whose version is first copied to ``cache_dir``)."""
    if versions.is_uri(path):
        vid = versions.current_version(path)
        if vid is None:
            raise VersionError(f"no {versions.CURRENT} pointer at {path}: nothing published there")
        path = fetch_version(str(path), vid, cache_dir or default_cache_dir(str(path)))
    path = Path(path)
    if (path / versions.CURRENT).is_file():
        path = versions.current_path(path)
    try:
        manifest = verify(path)
    except (FileNotFoundError, ValueError) as e:
        raise VersionError(str(e)) from None
    index = faiss.read_index(str(path / "index.faiss"))
    items = pq.read_table(path / "items.parquet")
    vectors = np.load(path / "embeddings.npy", mmap_mode="r")
    problems = []
    if index.d != manifest.dim or vectors.shape[1] != manifest.dim:
        problems.append(f"dimension: manifest {manifest.dim}, index {index.d}, vectors {vectors.shape[1]}")
    if not (index.ntotal == items.num_rows == vectors.shape[0] == manifest.counts.get("indexed")):
        problems.append(f"counts: index {index.ntotal}, items {items.num_rows}, vectors {vectors.shape[0]}, "
                        f"manifest {manifest.counts.get('indexed')}")
    if problems:
        raise VersionError(f"version {path} is inconsistent: {'; '.join(problems)}")
    id_col = manifest.model_extra.get("id_column", "item_id")
    ids = items.column(id_col).to_pylist()
    return LoadedVersion(path, manifest, index, items, vectors, ids, {iid: i for i, iid in enumerate(ids)})
