"""Publish stage: write a version's files into its staging folder, describe them in a
manifest, and hand the folder to the artifact contract (checksums -> rename -> CURRENT).
A run that fails anywhere before that leaves what is published untouched."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from groundrec.offline.cache import grounding_signature
from groundrec.offline.catalog import NO_IMAGE_COLUMN
from groundrec.offline.learn_report import LearnReport
from groundrec.shared.artifact import FIRST_SEEN, RECENT_INTERACTIONS, WINDOW_INTERACTIONS, Manifest, VersionFiles
from groundrec.shared.version_info import code_version


def write_version_files(staged: Path, index: faiss.Index, vectors: np.ndarray, items: pa.Table,
                        skipped: pa.Table, learned=None, thumbnails: pa.Table | None = None,
                        first_seen: pa.Array | None = None) -> None:
    """``learned``: the learn stage's result (an ``offline.learn.Learned``), or None;
    ``thumbnails``: (item_id, webp) rows, or None; ``first_seen``: the items' ``FIRST_SEEN``."""
    files = VersionFiles(Path(staged))
    if thumbnails is not None:
        pq.write_table(thumbnails, files.thumbnails)
    if learned is not None and learned.hybrid:  # the collaborative model's two matrices
        np.save(files.collab_query, learned.model.query)
        np.save(files.collab_item, learned.model.item)
        if learned.model.content_map is not None:  # how a live item gets its vectors (as a cold item got them)
            np.save(files.collab_content_map, learned.model.content_map)
        if learned.projection is not None:  # ... and the projection to the index's width
            np.save(files.project_item, learned.projection.item)
            np.save(files.project_query, learned.projection.query)
    if learned is not None and learned.hybrid and learned.counts is not None:  # what "new item" means to it
        items = items.append_column(WINDOW_INTERACTIONS, pa.array(learned.counts.astype(np.int64)))
    if learned is not None and learned.recent is not None:  # what its recent-popularity prior counts
        items = items.append_column(RECENT_INTERACTIONS, pa.array(learned.recent.astype(np.int64)))
    if first_seen is not None:
        items = items.append_column(FIRST_SEEN, first_seen)
    faiss.write_index(index, str(files.index))
    np.save(files.embeddings, vectors)
    pq.write_table(items, files.items)
    pq.write_table(skipped, files.skipped)


def build_manifest(cfg, version_id: str, encoder_path: str, dim: int, counts: dict, index_report: dict,
                   export_report: dict | None, timings_s: dict, learned: LearnReport | None = None,
                   notes: list[str] | None = None) -> Manifest:
    """What the job made, from its config (a JobConfig) and its results. ``learned``: the learn
    stage's report (recorded as ``collab`` for a hybrid version, as ``learn`` for a content-only
    one). ``notes``: what the run says about itself (a text-only catalog: no VLM ran, so none is
    recorded)."""
    recorded = learned.to_manifest() if learned is not None else None
    vlm = None if notes and any(n.startswith(NO_IMAGE_COLUMN) for n in notes) else {
        "backend": cfg.vlm.backend, "name": cfg.vlm.model, "revision": getattr(cfg.vlm, "revision", None),
        "fingerprint": grounding_signature(cfg.vlm, cfg.prompt)["model"], "max_new_tokens": cfg.vlm.max_new_tokens}
    return Manifest(
        version=version_id,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        code_version=code_version(),
        models={"vlm": vlm,
                "encoder": {"name": cfg.encoder.model, "resolved": encoder_path,
                            "max_seq_length": cfg.encoder.max_seq_length}},
        prompt={"style": cfg.prompt.style, "text": cfg.prompt.text(), "fields": cfg.prompt.fields},
        text_template=cfg.encoder.template,
        dim=dim,
        counts=counts,
        index=index_report,
        encoder_export=export_report,
        timings_s=timings_s,
        id_column=cfg.catalog.id_column,
        catalog_text_columns=cfg.catalog.text_columns,
        catalog_image_column=cfg.catalog.image_column,
        collab=recorded if learned is not None and learned.hybrid else None,
        learn=recorded if learned is not None and not learned.hybrid else None,
        notes=list(notes or []),
    )
