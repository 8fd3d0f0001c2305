"""Item representations to compare: catalog text, VLM groundings, visual features, fusion.

Text representations are templates over catalog columns and grounded fields, encoded by
the offline job's own cached encoder; VLM groundings come from the job's own grounding
stage (and its cache). A representation that cannot be built here is returned as not run,
with the reason, and the evaluation goes on without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from groundrec.offline.encode import render
from groundrec.offline.config import template_fields
from groundrec.offline.evaluation.config import EvalConfig

TINY_MARKER = "groundrec-tiny.json"  # written by `groundrec dev make-tiny-*`


@dataclass
class Representation:
    name: str
    description: str
    vectors: np.ndarray | None = None
    not_run: str | None = None  # the reason, when it could not be built
    note: str | None = None  # e.g. built with a tiny random-weight model
    example: str | None = None  # one item's text, to show what was embedded


def tiny_note(model: str) -> str | None:
    """Models made by our tiny builders carry a marker: their rows prove a path, not quality."""
    marker = Path(model) / TINY_MARKER
    if marker.is_file():
        kind = json.loads(marker.read_text()).get("architecture", "model")
        return f"tiny random-weight {kind}: proves the code path, says nothing about quality"
    return None


def metadata_columns(cfg: EvalConfig, items: pa.Table) -> list[str]:
    if cfg.metadata_columns is not None:
        return cfg.metadata_columns
    skip = {cfg.catalog.id_column, cfg.catalog.image_column, cfg.title_column, cfg.description_column, "image_uri"}
    return [f.name for f in items.schema
            if f.name not in skip and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]


def templates(cfg: EvalConfig, items: pa.Table) -> dict[str, tuple[str, str]]:
    """name -> (template, what it is) for every text representation."""
    meta = "; ".join(f"{c.replace('_', ' ')}: {{{c}}}" for c in metadata_columns(cfg, items))
    fields = "; ".join(f"{f.replace('_', ' ')}: {{vlm_{f}}}" for f in cfg.prompt.fields)
    t, d = cfg.title_column, cfg.description_column
    return {
        "title": (f"{{{t}}}", "catalog title only"),
        "metadata": (meta, "catalog metadata columns as 'name: value' text"),
        "description": (f"{{{d}}}", "catalog description"),
        "vlm_free": ("{vlm_text}", "VLM grounding, free description"),
        "vlm_structured": (fields, "VLM grounding, structured fields"),
        "vlm_free_title": (f"{{{t}}}. {{vlm_text}}", "catalog title + VLM free description"),
    }


def missing_columns(template: str, table: pa.Table) -> list[str]:
    return [c for c in template_fields(template) if c not in table.column_names]


def render_texts(template: str, table: pa.Table) -> list[str]:
    """One text per row; "" where every field is empty (labels alone say nothing about an item)."""
    rows = table.select(list(dict.fromkeys(template_fields(template)))).to_pylist()
    return [render(template, r).strip() if any(v not in (None, "") for v in r.values()) else "" for r in rows]


def encode_texts(texts: list[str], encode) -> np.ndarray:
    """Vectors for non-empty texts through ``encode`` (the job's cached encoder); an item with
    nothing to say (no grounding, empty columns) gets a zero vector: it is never ranked."""
    present = [i for i, t in enumerate(texts) if t]
    if not present:
        raise ValueError("every item's text is empty: nothing to encode (for VLM fields: the VLM's answers "
                         "had no parsable field; see parse_error in the job's items table)")
    vec = encode([texts[i] for i in present])
    out = np.zeros((len(texts), vec.shape[1]), dtype=np.float32)
    out[present] = vec
    return out
