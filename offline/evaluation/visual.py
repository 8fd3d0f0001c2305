"""Raw visual features: any Hugging Face image model (CLIP, SigLIP, ViT, ResNet...) as an
item encoder, for the "visual" and fusion rows of the evaluation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from groundrec.offline.catalog import IMAGE_URI
from groundrec.offline.cache import EmbeddingCache, cache_key
from groundrec.offline.images import BadImage, decode, read_bytes
from groundrec.offline.vlm import model_fingerprint
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.profiles import unit


def _features(model, pixel_values):
    if hasattr(model, "get_image_features"):  # CLIP / SigLIP: the joint-space image embedding
        out = model.get_image_features(pixel_values=pixel_values)
        return out if not hasattr(out, "pooler_output") else out.pooler_output
    out = model(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = out.last_hidden_state.mean(dim=1)
    return pooled.reshape(pooled.shape[0], -1)  # ResNet pools to (B, C, 1, 1)


def encode_images(model_dir: str, items: pa.Table, batch_size: int = 32, progress: bool = True,
                  cache_root: Path | None = None) -> tuple[np.ndarray, dict[str, int], int]:
    """Unit image vectors for every catalog row (zero rows for images that cannot be used), the
    count of unusable images by reason, and how many images the model encoded. With
    ``cache_root``, vectors are cached by (image sha256, model fingerprint): a re-run only
    encodes new or changed images."""
    import torch
    from transformers import AutoImageProcessor, AutoModel

    uris = items.column(IMAGE_URI).to_pylist()
    bad: dict[str, int] = {}
    data: dict[int, bytes] = {}
    keys: dict[int, str] = {}
    signature = {"image_features": model_fingerprint(model_dir)}
    for row, uri in enumerate(uris):
        try:
            data[row] = read_bytes(uri)
            keys[row] = cache_key(hashlib.sha256(data[row]).hexdigest(), signature)
        except BadImage as e:
            bad[str(e).split(":")[0]] = bad.get(str(e).split(":")[0], 0) + 1
    cache = EmbeddingCache(cache_root / "visual") if cache_root is not None else None
    known = cache.get(set(keys.values())) if cache is not None else {}
    todo = [row for row in keys if keys[row] not in known]
    if todo:
        processor = AutoImageProcessor.from_pretrained(model_dir)
        model = AutoModel.from_pretrained(model_dir).eval()
    n_encoded = 0
    bar = tqdm(total=len(todo), desc="visual features", unit="img", disable=not progress)
    for start in range(0, len(todo), batch_size):
        rows, images = [], []
        for row in todo[start:start + batch_size]:
            try:
                images.append(decode(data[row], uris[row]))
                rows.append(row)
            except BadImage as e:
                bad[str(e).split(":")[0]] = bad.get(str(e).split(":")[0], 0) + 1
        if images:
            with torch.no_grad():
                feats = unit(_features(model, processor(images=images, return_tensors="pt")["pixel_values"]).float().numpy())
            known.update({keys[r]: f for r, f in zip(rows, feats)})
            n_encoded += len(rows)
            if cache is not None:
                cache.put([keys[r] for r in rows], feats)
        bar.update(len(todo[start:start + batch_size]))
    bar.close()
    if cache is not None and todo:
        cache.compact()
    usable = [row for row in keys if keys[row] in known]
    if not usable:
        raise UserError("no image could be read: no visual features")
    dim = len(known[keys[usable[0]]])
    vectors = np.zeros((len(uris), dim), dtype=np.float32)
    for row in usable:
        vectors[row] = known[keys[row]]
    return vectors, bad, n_encoded
