"""Raw visual features: any Hugging Face image model (CLIP, SigLIP, ViT, ResNet...) as an
item encoder, for the "visual" and fusion rows of the evaluation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from groundrec.offline.catalog import IMAGE_URI
from groundrec.offline.images import BadImage, load
from groundrec.online.profiles import unit


def _features(model, pixel_values):
    if hasattr(model, "get_image_features"):  # CLIP / SigLIP: the joint-space image embedding
        out = model.get_image_features(pixel_values=pixel_values)
        return out if not hasattr(out, "pooler_output") else out.pooler_output
    out = model(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = out.last_hidden_state.mean(dim=1)
    return pooled.reshape(pooled.shape[0], -1)  # ResNet pools to (B, C, 1, 1)


def encode_images(model_dir: str, items: pa.Table, batch_size: int = 32,
                  progress: bool = True) -> tuple[np.ndarray, dict[str, int]]:
    """Unit image vectors for every catalog row (zero rows for images that cannot be used),
    and the count of unusable images by reason."""
    import torch
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    uris = items.column(IMAGE_URI).to_pylist()
    vectors: np.ndarray | None = None
    bad: dict[str, int] = {}
    bar = tqdm(total=len(uris), desc="visual features", unit="img", disable=not progress)
    for start in range(0, len(uris), batch_size):
        rows, images = [], []
        for row, uri in enumerate(uris[start:start + batch_size], start):
            try:
                images.append(load(uri).image.convert("RGB"))
                rows.append(row)
            except BadImage as e:
                reason = str(e).split(":")[0]
                bad[reason] = bad.get(reason, 0) + 1
        if images:
            with torch.no_grad():
                feats = _features(model, processor(images=images, return_tensors="pt")["pixel_values"])
            feats = feats.float().numpy()
            if vectors is None:
                vectors = np.zeros((len(uris), feats.shape[1]), dtype=np.float32)
            vectors[rows] = unit(feats)
        bar.update(min(batch_size, len(uris) - start))
    bar.close()
    if vectors is None:
        raise ValueError("no image could be read: no visual features")
    return vectors, bad
