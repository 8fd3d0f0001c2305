"""Hugging Face backend: any ``AutoModelForImageTextToText`` model, batched on CPU or GPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from groundrec.offline.vlm.base import (Resources, VLMSettings, VLMUnavailable, _how_to_fix, hub_commit, model_fingerprint,
                                        resolve_vlm)

if TYPE_CHECKING:
    from PIL import Image

    from groundrec.offline.config import PromptConfig


class HFVLMConfig(VLMSettings):
    backend: Literal["hf"] = "hf"
    revision: str | None = None
    num_gpus_per_actor: float = Field(0.0, ge=0, description="0 = auto: 1 when the cluster has GPUs")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class HFVLM:
    """Any ``AutoModelForImageTextToText`` model: batched, left-padded, greedy, new tokens only."""

    Settings = HFVLMConfig

    @staticmethod
    def identity(cfg: HFVLMConfig) -> dict:
        return {"backend": "hf", "model": model_fingerprint(cfg.model, cfg.revision), "endpoint_model": cfg.model,
                "revision": cfg.revision, "dtype": cfg.dtype}

    @staticmethod
    def pinned(cfg: HFVLMConfig) -> HFVLMConfig:
        """``cfg`` as the actors load it: a hub model at the commit the cache key names (each
        node would otherwise resolve main in its own cache)."""
        commit = None if Path(cfg.model).is_dir() else hub_commit(cfg.model, cfg.revision)
        return cfg.model_copy(update={"revision": commit}) if commit else cfg

    @staticmethod
    def resources(cfg: HFVLMConfig, cluster_gpus: float) -> Resources:
        return Resources(cfg.concurrency, cfg.num_gpus_per_actor or (1.0 if cluster_gpus > 0 else 0.0))

    @staticmethod
    def check(cfg: HFVLMConfig) -> None:
        """The model is there and is an image-text-to-text one (a text-only model or a sentence
        encoder has a config.json too, and failed inside the ground actors, after the hashing)."""
        import json

        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as VLMS

        path = resolve_vlm(cfg.model, cfg.revision)
        try:
            kind = json.loads((Path(path) / "config.json").read_text()).get("model_type")
        except (OSError, ValueError) as e:
            raise VLMUnavailable(f"VLM {cfg.model}: its config.json cannot be read: {e}") from None
        if kind not in VLMS:
            raise VLMUnavailable(f"VLM {cfg.model} is a {kind!r} model, not one that reads images and writes text "
                                 f"(image-text-to-text: e.g. qwen2_vl, smolvlm, llava); " + _how_to_fix(cfg.model))

    def generate(self, images: list[Image.Image], prompt: PromptConfig) -> list[str | Exception]:
        """The batch at once; if the batch fails, image by image, so one bad item cannot sink others."""
        try:
            return list(self.generate_batch(images, prompt))
        except Exception as e:
            if len(images) == 1:
                return [e]
            return [answer for im in images for answer in self.generate([im], prompt)]

    def __init__(self, cfg: HFVLMConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the job draws its own progress

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        # the commit the cache key names (``identity``), not wherever main has moved meanwhile
        revision = cfg.revision if Path(cfg.model).is_dir() else hub_commit(cfg.model, cfg.revision) or cfg.revision
        self.processor = AutoProcessor.from_pretrained(cfg.model, revision=revision)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, revision=revision, dtype=dtype)
        self.model.to(self.device).eval()
        self.max_new_tokens = cfg.max_new_tokens
        self.chat = bool(getattr(self.processor, "chat_template", None))
        if self.model.generation_config.pad_token_id is None:
            tok = self.processor.tokenizer
            self.model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _inputs(self, images: list[Image.Image], prompt: PromptConfig):
        if self.chat:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.text()}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            return self.processor(text=[text] * len(images), images=[[im] for im in images],
                                  padding=True, return_tensors="pt"), None
        # A captioner (BLIP-style) continues a text prefix.
        prefix = prompt.caption_prefix
        return self.processor(images=images, text=[prefix] * len(images), padding=True, return_tensors="pt"), prefix

    def generate_batch(self, images: list[Image.Image], prompt: PromptConfig) -> list[str]:
        if not images:
            return []
        inputs, prefix = self._inputs(images, prompt)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and self.model.dtype != self.torch.float32:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      num_beams=1)
        prompt_ids = inputs["input_ids"]
        n = prompt_ids.shape[1]
        if out.shape[1] >= n and self.torch.equal(out[:, :n].cpu(), prompt_ids.cpu()):
            texts = self.processor.batch_decode(out[:, n:], skip_special_tokens=True)
        else:  # encoder-decoder captioners return their own prefix: decode all, drop the prompt text
            texts = self.processor.batch_decode(out, skip_special_tokens=True)
            if prefix:
                texts = [t[len(prefix):] if t.lower().startswith(prefix.lower()) else t for t in texts]
        return [t.strip() for t in texts]
