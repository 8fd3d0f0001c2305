"""One typed, validated configuration for the CLI, the Ray job and (later) the service.

Defaults live here and nowhere else. A YAML file mirrors this structure; CLI flags
override individual fields.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
GPU_VLM = "Qwen/Qwen2-VL-2B-Instruct"
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

FREE_PROMPT = (
    "Describe this product for a shopping catalogue: its colour, style, material "
    "and the occasion it is meant for. Answer in two or three sentences."
)
DEFAULT_FIELDS = ["category", "colour", "pattern", "material", "style", "occasion", "target_group"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CatalogConfig(_Strict):
    """Where the catalog is and what its columns are called."""

    path: Path | None = None
    images_root: Path | None = None
    id_column: str = "item_id"
    image_column: str = "image"
    text_columns: list[str] = Field(default_factory=lambda: ["title", "description"])


class PromptConfig(_Strict):
    style: Literal["free", "structured"] = "free"
    free_prompt: str = FREE_PROMPT
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    # Captioners without a chat template (BLIP) continue a text prefix instead.
    caption_prefix: str = "a product photo of"

    @field_validator("fields")
    @classmethod
    def _fields_are_identifiers(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("structured prompt needs at least one field")
        bad = [f for f in v if not f.isidentifier()]
        if bad:
            raise ValueError(f"field names must be identifiers (letters, digits, _): {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate field names: {v}")
        return v

    def text(self) -> str:
        """The instruction sent to the VLM."""
        if self.style == "free":
            return self.free_prompt
        lines = "\n".join(f"{f}: <value>" for f in self.fields)
        return (
            "Look at this product photo and fill in each field with a few words. "
            "Answer with exactly these lines and nothing else:\n" + lines
        )


class VLMConfig(_Strict):
    backend: Literal["hf", "openai"] = "hf"
    model: str = DEFAULT_VLM
    revision: str | None = None
    max_new_tokens: int = Field(96, ge=1, le=4096)
    batch_size: int = Field(8, ge=1)
    concurrency: int = Field(1, ge=1, description="actors (hf) or parallel requests (openai)")
    num_gpus_per_actor: float = Field(0.0, ge=0, description="0 = auto: 1 when the cluster has GPUs")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # openai backend
    endpoint: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> "VLMConfig":
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("vlm.backend 'openai' needs vlm.endpoint, e.g. http://127.0.0.1:8001/v1")
        return self


class EncoderConfig(_Strict):
    model: str = DEFAULT_ENCODER
    template: str = "{title}. {vlm_text}"
    batch_size: int = Field(64, ge=1)
    concurrency: int = Field(1, ge=1)
    max_seq_length: int = Field(256, ge=8)

    @field_validator("template")
    @classmethod
    def _template_parses(cls, v: str) -> str:
        names = template_fields(v)
        if not names:
            raise ValueError("encoder.template uses no field, e.g. '{title}. {vlm_text}'")
        return v


class IndexConfig(_Strict):
    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    flat_max_items: int = Field(100_000, ge=1, description="auto: exact search up to this many items, HNSW above")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (memory: ~2*M*4 bytes per item)")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build effort (80 met the 1M goal; 40 needed 10x the efSearch)")
    target_recall: float = Field(0.95, gt=0, le=1)
    recall_k: int = Field(10, ge=1)
    recall_sample: int = Field(1000, ge=10)
    use_gpu: Literal["auto", "never"] = "auto"


class ExportConfig(_Strict):
    enabled: bool = True
    int8: bool = True
    tolerance: float = Field(1e-4, gt=0, description="max abs difference ONNX vs PyTorch")
    int8_min_cosine: float = Field(0.95, gt=0, le=1)


class RunConfig(_Strict):
    runner: Literal["ray", "local"] = "ray"
    ray_address: str | None = Field(None, description="None: start Ray in-process; 'auto' or ray://...")
    work_dir: Path | None = Field(None, description="Ray temp files and scratch; default <out>/.work")
    keep_versions: int = Field(0, ge=0, description="0 = keep all published versions")


class JobConfig(_Strict):
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    out: Path | None = None
    cache_dir: Path | None = Field(None, description="grounding cache; default <out>/cache")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    vlm: VLMConfig = Field(default_factory=VLMConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _template_fields_exist(self) -> "JobConfig":
        unknown = set(template_fields(self.encoder.template)) - set(self.available_text_fields())
        if unknown:
            raise ValueError(
                f"encoder.template uses {sorted(unknown)}, which is neither a catalog text column "
                f"({self.catalog.text_columns}) nor a grounded field ({self.grounded_fields()}); "
                "add it to catalog.text_columns or fix the template"
            )
        return self

    def grounded_fields(self) -> list[str]:
        names = ["vlm_text"]
        if self.prompt.style == "structured":
            names += [f"vlm_{f}" for f in self.prompt.fields]
        return names

    def available_text_fields(self) -> list[str]:
        return list(self.catalog.text_columns) + self.grounded_fields()

    def require_paths(self) -> None:
        missing = [n for n, v in (("catalog.path (--catalog)", self.catalog.path), ("out (--out)", self.out)) if v is None]
        if missing:
            raise ValueError(f"missing required setting(s): {', '.join(missing)}")

    @property
    def resolved_cache_dir(self) -> Path:
        assert self.out is not None
        return self.cache_dir or self.out / "cache"

    @property
    def resolved_work_dir(self) -> Path:
        assert self.out is not None
        return self.run.work_dir or self.out / ".work"


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as e:
        raise ValueError(f"encoder.template {template!r} is not a valid format string: {e}") from None


def load_config(path: Path | None, overrides: dict | None = None, model: type[BaseModel] | None = None):
    """Read a YAML config (optional), apply dotted overrides like {'vlm.model': 'x'}, validate."""
    data: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return (model or JobConfig).model_validate(data)


REPRESENTATIONS = ("title", "metadata", "description", "vlm_free", "vlm_structured", "vlm_free_title",
                   "visual", "fusion_concat", "fusion_mean")


class InteractionsConfig(_Strict):
    path: Path | None = None
    user_column: str = "user_id"
    item_column: str = "item_id"
    timestamp_column: str = "timestamp"


class SplitConfig(_Strict):
    """Per-user temporal hold-out (the last day / last n / last fraction of each user's
    interactions is test, the same amount before it validation), or MMRec's random 8:1:1."""

    kind: Literal["temporal", "random"] = "temporal"
    holdout: Literal["last_day", "last_n", "last_frac"] = "last_day"
    n: int = Field(1, ge=1, description="last_n: interactions per hold-out part")
    frac: float = Field(0.2, gt=0, lt=0.5, description="last_frac: share of each user's interactions per part")
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0


class TuningConfig(_Strict):
    """Grids searched on validation users only; the winners are then reported on test."""

    half_life_days: list[float] = Field(default_factory=lambda: [7.0, 30.0, 120.0])
    n_interests: list[int] = Field(default_factory=lambda: [2, 3])
    popularity_weight: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1])
    fusion_text_weight: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75])


class EvalConfig(_Strict):
    catalog: CatalogConfig = Field(default_factory=lambda: CatalogConfig(text_columns=[]))
    interactions: InteractionsConfig = Field(default_factory=InteractionsConfig)
    out: Path | None = None
    cache_dir: Path | None = Field(None, description="grounding/embedding cache; share it with the job's to reuse groundings")
    split: SplitConfig = Field(default_factory=SplitConfig)
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20, 50])
    primary_metric: str = "recall@20"
    bootstrap: int = Field(1000, ge=100)
    permutations: int = Field(10_000, ge=100, description="sign flips of the paired randomisation test")
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: int = 0
    representations: list[str] = Field(default_factory=lambda: list(REPRESENTATIONS))
    title_column: str = "title"
    description_column: str = "description"
    metadata_columns: list[str] | None = Field(None, description="default: every string column but id, image, title, description")
    vlm: VLMConfig = Field(default_factory=VLMConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    vision_model: str = Field("openai/clip-vit-base-patch32", description="any HF image model: CLIP, ViT, ResNet...")
    vision_batch_size: int = Field(32, ge=1)
    fidelity: dict[str, str] = Field(default_factory=dict, description="VLM field -> catalog column to score it against")
    synonyms: dict[str, str] = Field(default_factory=dict, description="extra value synonyms for fidelity, e.g. gray: grey")
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    runner: Literal["ray", "local"] = "local"

    @field_validator("representations")
    @classmethod
    def _known_representations(cls, v: list[str]) -> list[str]:
        unknown = [r for r in v if r not in REPRESENTATIONS]
        if unknown:
            raise ValueError(f"unknown representation(s) {unknown}; choose from {list(REPRESENTATIONS)}")
        return v

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("ks must be a non-empty list of positive cut-offs, e.g. [5, 10, 20, 50]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _primary_metric_is_computed(self) -> "EvalConfig":
        name, _, k = self.primary_metric.partition("@")
        if name not in ("recall", "ndcg", "hit_rate", "precision", "mrr") or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"primary_metric {self.primary_metric!r} must be one of recall/ndcg/hit_rate/precision/mrr "
                             f"@ one of ks {self.ks}, e.g. 'recall@20'")
        return self

    def require_paths(self) -> None:
        missing = [n for n, v in (("catalog.path (--catalog)", self.catalog.path),
                                  ("interactions.path (--interactions)", self.interactions.path),
                                  ("out (--out)", self.out)) if v is None]
        if missing:
            raise ValueError(f"missing required setting(s): {', '.join(missing)}")

    @property
    def resolved_cache_dir(self) -> Path:
        assert self.out is not None
        return self.cache_dir or self.out / "cache"

    def job_config(self, style: str) -> JobConfig:
        """The offline job's config for grounding (and encoding) with this evaluation's models."""
        assert self.out is not None
        return JobConfig(catalog=self.catalog, out=self.out / ".job", cache_dir=self.resolved_cache_dir,
                         prompt=self.prompt.model_copy(update={"style": style}), vlm=self.vlm,
                         encoder=self.encoder.model_copy(update={"template": "{vlm_text}"}),
                         run=RunConfig(runner=self.runner, work_dir=self.out / ".work"))


class ServeConfig(_Strict):
    """The online service. Limits apply per request; violations get a 4xx naming the field."""

    artifacts: str = Field(description="artifacts directory, or an fsspec URI such as s3://bucket/groundrec")
    version_cache_dir: Path | None = Field(None, description="where versions from a URI are copied; default under /tmp")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    encoder_variant: Literal["fp32", "int8"] = "fp32"
    reload_interval_s: float = Field(5.0, gt=0, description="how often CURRENT is checked for a new version")
    fallback: Literal["popular", "error"] = "popular"
    interactions: Path | None = Field(None, description="Parquet/CSV/JSONL of interactions: item popularity")
    interactions_item_column: str = "item_id"
    half_life_days: float = Field(30.0, gt=0)
    n_interests: int = Field(3, ge=1, le=16)
    max_k: int = Field(100, ge=1)
    max_history: int = Field(500, ge=1)
    max_text_chars: int = Field(1000, ge=1)
    max_batch: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    api_key_env: str = Field("GROUNDREC_API_KEY", description="if this variable is set, clients must send X-API-Key")

    @field_validator("artifacts", mode="before")
    @classmethod
    def _path_to_text(cls, v):
        return str(v) if isinstance(v, Path) else v
