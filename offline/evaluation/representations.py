"""Item representations to compare: catalog text, VLM groundings, visual features, fusion.

Text representations are templates over catalog columns and grounded fields, encoded by
the offline job's own cached encoder; VLM groundings come from the job's own grounding
stage (and its cache). A representation that cannot be built here is returned as not run,
with the reason, and the evaluation goes on without it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from groundrec.offline.encode import render
from groundrec.offline import catalog as catalog_stage
from groundrec.offline.config import template_fields
from groundrec.offline.evaluation import fidelity
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.shared.errors import UserError

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
        **{name: (template, "user template") for name, template in cfg.templates.items()},
    }


def grounding_style(name: str, template: str) -> str | None:
    """Which VLM grounding a representation needs: structured fields, the free text, or none."""
    if name == "vlm_structured":
        return "structured"
    used = [f for f in template_fields(template) if f.startswith("vlm_")]
    if not used:
        return None
    return "free" if used == ["vlm_text"] * len(used) else "structured"


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
        raise UserError("every item's text is empty: nothing to encode (for VLM fields: the VLM's answers "
                         "had no parsable field; see parse_error in the job's items table)")
    vec = encode([texts[i] for i in present])
    out = np.zeros((len(texts), vec.shape[1]), dtype=np.float32)
    out[present] = vec
    return out


# --- building every representation of the config ------------------------------------------
@dataclass
class Built:
    reps: list[Representation]
    fidelity: dict
    visual_encoded: int | None  # images through the vision model (the rest: cache)
    timings: dict[str, float]


def build_representations(cfg: EvalConfig, items: pa.Table, runner, progress: bool) -> Built:
    return _Builder(cfg, items, runner, progress).build()


class _Builder:
    def __init__(self, cfg: EvalConfig, items: pa.Table, runner, progress: bool):
        self.cfg, self.items, self._runner, self.progress = cfg, items, runner, progress
        self.visual_encoded: int | None = None
        self.timings: dict[str, float] = {}

    def build(self) -> Built:
        reps = self._representations()
        return Built(reps, self.fidelity_report, self.visual_encoded, self.timings)

    def _time(self, name: str, start: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 2)

    def _representations(self) -> list[Representation]:
        cfg = self.cfg
        self.fidelity_report: dict = {}
        table = self.items
        tmpl = templates(cfg, table)
        reps: list[Representation] = []
        groundings: dict[str, pa.Table | str] = {}
        for name in tqdm(cfg.representation_names, desc="representations", unit="rep", disable=not self.progress):
            t = time.perf_counter()
            if name in tmpl:
                template, what = tmpl[name]
                rep = Representation(name, what)
                source = table
                style = grounding_style(name, template)
                if style is not None:
                    if style not in groundings:
                        groundings[style] = self._ground(style)
                    g = groundings[style]
                    if isinstance(g, str):
                        rep.not_run = g
                        reps.append(rep)
                        continue
                    source = g
                    rep.note = tiny_note(cfg.vlm.model)
                missing = missing_columns(template, source)
                if missing or not template:
                    rep.not_run = f"the catalog has no column(s) {missing or 'for this template'}"
                else:
                    texts = render_texts(template, source)
                    if source is not table:  # groundings cover the items that could be grounded
                        by_id = dict(zip(source.column(cfg.catalog.id_column).to_pylist(), texts))
                        texts = [by_id.get(i, "") for i in table.column(cfg.catalog.id_column).to_pylist()]
                    rep.example = next((x for x in texts if x), None)
                    try:
                        rep.vectors = encode_texts(texts, self._encode)
                    except ValueError as e:
                        rep.not_run = str(e)
            elif name == "visual":
                rep = self._visual()
            else:
                rep = Representation(name, {"fusion_concat": "concatenation of text and visual vectors",
                                            "fusion_mean": "weighted mean of text and visual cosine scores"}[name])
            self._time(f"representation:{name}", t)
            reps.append(rep)
        if isinstance(groundings.get("structured"), pa.Table) and cfg.fidelity:
            g = groundings["structured"]
            g = g.filter(g.column("grounded"))  # fidelity of answers, not of items without one
            self.fidelity_report = {
                "note": tiny_note(cfg.vlm.model),
                "fields": {f: fidelity.field_accuracy(g.column(f"vlm_{f}").to_pylist(), g.column(col).to_pylist(),
                                                      cfg.synonyms)
                           for f, col in cfg.fidelity.items() if f"vlm_{f}" in g.column_names and col in g.column_names},
                "unknown": [f"{f} -> {col}" for f, col in cfg.fidelity.items()
                            if f"vlm_{f}" not in g.column_names or col not in g.column_names],
            }
        return reps

    def _ground(self, style: str) -> pa.Table | str:
        """The job's grounding stage on the whole catalog, or the reason it cannot run here."""
        from groundrec.offline.ground import ground_catalog
        from groundrec.offline.vlm import VLMUnavailable
        from groundrec.offline.vlm.registry import backend_class

        cfg = self.cfg
        items = catalog_stage.load_catalog(cfg.catalog)
        if (why := catalog_stage.text_only(items, cfg.catalog)) is not None:
            return why
        try:
            backend_class(cfg.vlm).check(cfg.vlm)
        except VLMUnavailable as e:
            return f"VLM not available on this machine: {e}"
        return ground_catalog(self._runner, items, id_column=cfg.catalog.id_column, vlm=cfg.vlm,
                              prompt=cfg.prompt.model_copy(update={"style": style}), cache_dir=cfg.resolved_cache_dir,
                              progress=self.progress).table

    def _encode(self, texts: list[str]) -> np.ndarray:
        from groundrec.offline.encode import encode_cached, resolve_encoder

        encoder = self.cfg.encoder
        return encode_cached(self._runner, texts, encoder, resolve_encoder(encoder.model), self.cfg.resolved_cache_dir,
                             self.progress)[0]

    def _visual(self) -> Representation:
        from groundrec.offline.evaluation.visual import encode_images
        from groundrec.offline.vlm import VLMUnavailable, resolve_vlm

        cfg = self.cfg
        rep = Representation("visual", f"raw visual features ({cfg.vision_model})")
        if (why := catalog_stage.text_only(self.items, cfg.catalog)) is not None:
            rep.not_run = why
            return rep
        try:
            path = resolve_vlm(cfg.vision_model, kind="vision model")
        except VLMUnavailable as e:
            rep.not_run = f"vision model not available on this machine: {e}"
            return rep
        rep.vectors, bad, encoded = encode_images(str(path), self.items, cfg.vision_batch_size, self.progress,
                                                  cfg.resolved_cache_dir)
        self.visual_encoded = encoded
        rep.note = tiny_note(cfg.vision_model)
        if bad:
            rep.note = "; ".join(filter(None, [rep.note, "unreadable images: " + ", ".join(f"{k} ({v})" for k, v in bad.items())]))
        return rep

