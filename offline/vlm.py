"""VLM backends: image + instruction -> text. Hugging Face models or an OpenAI-compatible server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from groundrec.shared.config import PromptConfig, VLMConfig


class VLMUnavailable(RuntimeError):
    """The configured VLM cannot be loaded here; the message says how to point at one."""


def _how_to_fix(name: str) -> str:
    return (
        f"Point --vlm at a local model directory instead: a downloaded copy "
        f"(`huggingface-cli download {name} --local-dir DIR`, then --vlm DIR), or, for a smoke test "
        "only, a tiny random-weight model (`groundrec dev make-tiny-vlm DIR`, then --vlm DIR)."
    )


def resolve_vlm(name: str, revision: str | None = None, kind: str = "VLM") -> Path:
    """Find ``name`` locally (a directory, or the Hugging Face cache); download it only if
    the hub answers. Fails within seconds, with a fix, when neither works. ``kind`` names the
    model in messages (any Hugging Face model repository resolves the same way)."""
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise VLMUnavailable(f"{kind} directory {name} has no config.json: is it a saved Hugging Face model?")
        return Path(name)
    if Path(name).exists() or name.startswith((".", "/")):
        raise VLMUnavailable(f"{kind} path {name} is not a directory. " + _how_to_fix(name))
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise VLMUnavailable(f"{kind} {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. " + _how_to_fix(name))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        return Path(snapshot_download(name, revision=revision))
    except Exception as e:
        raise VLMUnavailable(
            f"cannot download {kind} {name!r} from the Hugging Face Hub ({type(e).__name__}: {str(e)[:200]}). " + _how_to_fix(name)
        ) from None


def model_fingerprint(name: str, revision: str | None = None) -> str:
    """What identifies the weights in the cache key: the hub id and revision, or for a local
    directory the names, sizes and modification times of its files (cheap, changes on retrain)."""
    path = Path(name)
    if path.is_dir():
        files = sorted((str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime))
                       for p in path.rglob("*") if p.is_file())
        return "local:" + hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
    return f"hub:{name}@{revision or 'main'}"


class HFVLM:
    """Any ``AutoModelForImageTextToText`` model: batched, left-padded, greedy, new tokens only."""

    def __init__(self, cfg: VLMConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the job draws its own progress

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        self.processor = AutoProcessor.from_pretrained(cfg.model, revision=cfg.revision)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, revision=cfg.revision, dtype=dtype)
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

    def generate(self, images: list[Image.Image], prompt: PromptConfig) -> list[str]:
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


class OpenAIVLM:
    """An OpenAI-compatible chat-completions server (vLLM, TGI, ...): bounded concurrency,
    per-request timeout, retries with backoff on connection errors, 429 and 5xx."""

    RETRY_STATUS = {408, 429, 500, 502, 503, 504}

    def __init__(self, cfg: VLMConfig):
        import httpx

        self.httpx = httpx
        self.cfg = cfg
        headers = {}
        key = os.environ.get(cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=cfg.endpoint.rstrip("/"), timeout=cfg.timeout_s, headers=headers)
        self.pool = ThreadPoolExecutor(max_workers=cfg.concurrency)

    def _one(self, image: Image.Image, prompt: PromptConfig) -> str:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        body = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": prompt.text()},
            ]}],
            "max_tokens": self.cfg.max_new_tokens,
            "temperature": 0,
        }
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(min(0.25 * 2 ** (attempt - 1), 8.0))
            try:
                r = self.client.post("/chat/completions", json=body)
            except (self.httpx.TransportError,) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code in self.RETRY_STATUS:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                raise RuntimeError(f"VLM endpoint refused the request: HTTP {r.status_code}: {r.text[:300]}")
            try:
                return (r.json()["choices"][0]["message"]["content"] or "").strip()
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise RuntimeError(f"VLM endpoint answered without choices[0].message.content: {r.text[:300]}") from e
        raise RuntimeError(f"VLM endpoint failed after {self.cfg.max_retries + 1} attempt(s): {last}")

    def generate_each(self, images: list[Image.Image], prompt: PromptConfig) -> list[str | Exception]:
        """One answer or one exception per image: a failed request does not sink the batch."""
        futures = [self.pool.submit(self._one, im, prompt) for im in images]
        results: list[str | Exception] = []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as e:  # recorded per item by the caller
                results.append(e)
        return results
