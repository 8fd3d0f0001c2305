"""Loading a published artifact version for serving: verified against its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from groundrec.shared import artifact
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.searcher import Searcher
from groundrec.shared.artifact import Manifest


class VersionError(UserError):
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
    collab_query: np.ndarray | None = None  # hybrid versions: query-side collaborative vectors
    collab_item: np.ndarray | None = None  # ... and item-side (the index holds them times the weight)
    project_item: np.ndarray | None = None  # projected hybrids: full-width item vector -> index vector
    project_query: np.ndarray | None = None  # ... and full-width profile -> what is searched
    collab_content_map: np.ndarray | None = None  # content -> [query, item]: a live item's collaborative vectors

    @property
    def collab_weight(self) -> float | None:
        return float(self.manifest.collab["weight"]) if self.manifest.collab else None

    @property
    def collab_half_life(self) -> float:
        """The recency half-life (in items) of a history's collaborative query; 0: none (and
        for versions published before it existed)."""
        return float((self.manifest.collab or {}).get("query_half_life") or 0.0)

    @property
    def collab_fresh_weight(self) -> float:
        """What a hybrid adds to the score of an item with no interaction in the job's window;
        0 for versions published before it existed."""
        return float((self.manifest.collab or {}).get("fresh_weight") or 0.0)

    @property
    def recent_prior(self) -> np.ndarray | None:
        """The version's recent-popularity prior per item row (``Searcher.version_recent_prior``),
        or None: what every list it serves adds."""
        return Searcher.version_recent_prior(self.manifest, self.items)

    @property
    def collab_fresh_slots(self) -> int:
        """Of each list, the places a hybrid keeps for new items; 0 for versions published
        before it existed."""
        return int((self.manifest.collab or {}).get("fresh_slots") or 0)


def load_version(path: str | Path, cache_dir: Path | None = None) -> LoadedVersion:
    """Load a version folder, or the CURRENT one of an artifacts root (a local folder or an
    fsspec URI, whose version is first copied to ``cache_dir``)."""
    try:
        path = artifact.locate(path, cache_dir=cache_dir)
        manifest = artifact.verify(path)
    except (FileNotFoundError, ValueError) as e:
        raise VersionError(str(e)) from None
    files = artifact.VersionFiles(path)
    index = faiss.read_index(str(files.index))
    items = pq.read_table(files.items)
    # Read into memory, not memory-mapped: a file truncated or rewritten in place under a
    # running server would otherwise kill it with SIGBUS on the next page it touches.
    vectors = np.load(files.embeddings)
    problems = []
    if index.d != manifest.index_dim or vectors.shape[1] != manifest.dim:
        problems.append(f"dimension: manifest {manifest.dim} (index {manifest.index_dim}), index {index.d}, "
                        f"vectors {vectors.shape[1]}")
    query = item = content_map = None
    if manifest.collab:
        query, item = np.load(files.collab_query), np.load(files.collab_item)
        rank = int(manifest.collab["rank"])
        if query.shape != (items.num_rows, rank) or item.shape != (items.num_rows, rank):
            problems.append(f"collaborative vectors: query {query.shape}, item {item.shape}, expected "
                            f"({items.num_rows}, {rank}) each")
        if files.collab_content_map.is_file():  # versions before it have none: live items then get zeros
            content_map = np.load(files.collab_content_map)
            if content_map.shape != (vectors.shape[1], 2 * rank):
                problems.append(f"collaborative content map: {content_map.shape}, expected "
                                f"({vectors.shape[1]}, {2 * rank})")
    to_item = to_query = None
    if manifest.projected:
        to_item, to_query = np.load(files.project_item), np.load(files.project_query)
        want = (manifest.hybrid_dim, manifest.index_dim)
        if to_item.shape != want or to_query.shape != want:
            problems.append(f"projection: item {to_item.shape}, query {to_query.shape}, expected {want} each")
    if not (index.ntotal == items.num_rows == vectors.shape[0] == manifest.counts.get("indexed")):
        problems.append(f"counts: index {index.ntotal}, items {items.num_rows}, vectors {vectors.shape[0]}, "
                        f"manifest {manifest.counts.get('indexed')}")
    if problems:
        raise VersionError(f"version {path.name} is inconsistent: {'; '.join(problems)}")
    ids = items.column(manifest.id_column).to_pylist()
    return LoadedVersion(path, manifest, index, items, vectors, ids, {iid: i for i, iid in enumerate(ids)}, query, item,
                         to_item, to_query, content_map)


def strategy_info(path: str | Path) -> dict:
    """What a version's profiles are, as ``/readyz`` and the web page report them: the strategy
    a request that names none gets, and whether it serves ``sequence`` (a version that holds
    the encoder serves with it loaded, or is not served at all)."""
    return {"default_strategy": artifact.read_manifest(path).default_strategy,
            "sequence_encoder": artifact.VersionFiles(Path(path)).has_sequence}
