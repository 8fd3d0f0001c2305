"""Loading a published artifact version for serving: verified against its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from groundrec.shared import versions
from groundrec.shared.manifest import Manifest, verify


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


def load_version(path: str | Path, check: bool = True) -> LoadedVersion:
    """Load a version directory, or the CURRENT one of an artifacts root."""
    path = Path(path)
    if (path / versions.CURRENT).is_file():
        path = versions.current_path(path)
    try:
        manifest = verify(path) if check else Manifest.model_validate_json((path / "manifest.json").read_text())
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
