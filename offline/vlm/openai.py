"""OpenAI-compatible backend: a chat-completions server (vLLM, TGI, ...) grounds the images."""

from __future__ import annotations

import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from groundrec.offline.vlm.base import Resources, VLMSettings

if TYPE_CHECKING:
    from PIL import Image

    from groundrec.offline.config import PromptConfig


class OpenAIVLMConfig(VLMSettings):
    backend: Literal["openai"] = "openai"
    endpoint: str = Field(description="the server's base URL, e.g. http://127.0.0.1:8001/v1")
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)


class OpenAIVLM:
    """An OpenAI-compatible chat-completions server (vLLM, TGI, ...): bounded concurrency,
    per-request timeout, retries with backoff on connection errors, 429 and 5xx."""

    RETRY_STATUS = {408, 429, 500, 502, 503, 504}
    Settings = OpenAIVLMConfig

    @staticmethod
    def identity(cfg: OpenAIVLMConfig) -> dict:
        # The served model's name is all we know of its weights. (revision and dtype stay in
        # the key, empty, so caches written before backends were split stay valid.)
        return {"backend": "openai", "model": cfg.model, "endpoint_model": cfg.model, "revision": None, "dtype": "auto"}

    @staticmethod
    def resources(cfg: OpenAIVLMConfig, cluster_gpus: float) -> Resources:
        return Resources(1, 0.0)  # one actor; cfg.concurrency requests in flight inside it

    @staticmethod
    def check(cfg: OpenAIVLMConfig) -> None:
        pass  # a server that is down shows per item, retried, recorded as skip reasons

    def __init__(self, cfg: OpenAIVLMConfig):
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

    def generate(self, images: list[Image.Image], prompt: PromptConfig) -> list[str | Exception]:
        """One answer or one exception per image: a failed request does not sink the batch."""
        futures = [self.pool.submit(self._one, im, prompt) for im in images]
        results: list[str | Exception] = []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as e:  # recorded per item by the caller
                results.append(e)
        return results
