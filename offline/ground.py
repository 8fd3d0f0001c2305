"""Ground stage: the batch mapper that turns image locations into VLM text and parsed fields.

``HashImages`` runs first over every item (read bytes, hash, check they decode);
``GroundImages`` then runs only over images the cache does not hold. Both take and
return Ray's "numpy" batches (dict of column -> array) so Ray and the local runner
call them identically. "No value" is the empty string, never None: Ray turns a
column of only None into float NaN.
"""

from __future__ import annotations

import json
import time

import numpy as np

from groundrec.offline import images
from groundrec.offline.parse import parse_structured
from groundrec.shared.config import PromptConfig, VLMConfig


class HashImages:
    """item_id, image_uri -> item_id, image_sha256, image_error ("" when fine)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shas, errors = [], []
        for uri in batch["image_uri"]:
            try:
                loaded = images.load(uri)
                shas.append(loaded.sha256)
                errors.append("")
            except images.BadImage as e:
                shas.append("")
                errors.append(str(e))
        return {"item_id": batch["item_id"], "image_sha256": np.array(shas, dtype=object),
                "image_error": np.array(errors, dtype=object)}


class GroundImages:
    """item_id, image_uri, cache_key -> the grounding record (see cache.GROUNDING_SCHEMA)."""

    def __init__(self, vlm: dict, prompt: dict):
        from groundrec.offline.vlm import HFVLM, OpenAIVLM

        self.vlm_cfg = VLMConfig.model_validate(vlm)
        self.prompt = PromptConfig.model_validate(prompt)
        self.backend = OpenAIVLM(self.vlm_cfg) if self.vlm_cfg.backend == "openai" else HFVLM(self.vlm_cfg)

    def _answers(self, imgs: list) -> list[str | Exception]:
        if hasattr(self.backend, "generate_each"):
            return self.backend.generate_each(imgs, self.prompt)
        try:
            return list(self.backend.generate(imgs, self.prompt))
        except Exception as e:  # a batch-level failure: retry one by one so one bad item cannot sink others
            if len(imgs) == 1:
                return [e]
            out: list[str | Exception] = []
            for im in imgs:
                out.extend(self._answers([im]))
            return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        n = len(batch["item_id"])
        errors = [""] * n
        decoded, where = [], []
        for i, uri in enumerate(batch["image_uri"]):
            try:
                decoded.append(images.load(uri).image)
                where.append(i)
            except images.BadImage as e:
                errors[i] = str(e)
        texts = [""] * n
        for i, answer in zip(where, self._answers(decoded)):
            if isinstance(answer, Exception):
                errors[i] = f"VLM failed: {type(answer).__name__}: {answer}"
            else:
                texts[i] = answer
        fields, ok, perr = [], [], []
        for t, err in zip(texts, errors):
            if err:
                fields.append(""), ok.append(False), perr.append("")
            elif self.prompt.style == "structured":
                p = parse_structured(t, self.prompt.fields)
                fields.append(json.dumps(p.fields)), ok.append(p.ok), perr.append(p.error or "")
            else:
                fields.append("{}"), ok.append(True), perr.append("")
        per_item = (time.perf_counter() - started) / max(n, 1)
        obj = lambda xs: np.array(xs, dtype=object)  # noqa: E731
        return {
            "item_id": batch["item_id"], "cache_key": batch["cache_key"], "image_sha256": batch["image_sha256"],
            "vlm_text": obj(texts), "vlm_fields": obj(fields), "parse_ok": np.array(ok, dtype=bool), "parse_error": obj(perr),
            "ground_error": obj(errors), "ground_seconds": np.full(n, per_item),
        }
