"""The offline job's configuration: one typed, validated object for the CLI, the Ray job
and the evaluation's grounding. Defaults live here and nowhere else; a YAML file mirrors
this structure and CLI flags override single fields."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from groundrec.offline.collab_grid import CollabGrid
from groundrec.offline.interactions import InteractionsConfig
from groundrec.offline.sequence_config import SequenceJobConfig
from groundrec.offline.vlm.registry import VLMConfig, default_vlm_config
from groundrec.shared.artifact.pointer import local_folder
from groundrec.shared.config import CatalogConfig, StrictModel, load_config, require_settings
from groundrec.shared.errors import UserError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

FREE_PROMPT = (
    "Describe this product for a shopping catalogue: its colour, style, material "
    "and the occasion it is meant for. Answer in two or three sentences."
)
DEFAULT_FIELDS = ["category", "colour", "pattern", "material", "style", "occasion", "target_group"]


class PromptConfig(StrictModel):
    style: Literal["free", "structured"] = "free"
    free_prompt: str = FREE_PROMPT
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    # Captioners without a chat template (BLIP) continue a text prefix instead.
    caption_prefix: str = "a product photo of"

    @field_validator("fields")
    @classmethod
    def _fields_are_identifiers(cls, v: list[str]) -> list[str]:
        if not v:
            raise UserError("structured prompt needs at least one field")
        bad = [f for f in v if not f.isidentifier()]
        if bad:
            raise UserError(f"field names must be identifiers (letters, digits, _): {bad}")
        if len(set(v)) != len(v):
            raise UserError(f"duplicate field names: {v}")
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


class EncoderConfig(StrictModel):
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
            raise UserError("encoder.template uses no field, e.g. '{title}. {vlm_text}'")
        return v


IndexKind = Literal["auto", "flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)


class IndexConfig(StrictModel):
    kind: IndexKind = "auto"
    flat_max_items: int = Field(100_000, ge=1, description="auto: exact search up to this many items, HNSW above")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (memory: ~2*M*4 bytes per item)")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build effort (80 met the 1M goal; 40 needed 10x the efSearch)")
    target_recall: float = Field(0.95, gt=0, le=1)
    recall_k: int = Field(10, ge=1)
    recall_sample: int = Field(1000, ge=10)
    use_gpu: Literal["auto", "never"] = "auto"


class ThumbnailConfig(StrictModel):
    enabled: bool = Field(True, description="write a WebP thumbnail per item into the version, for the web page "
                          "(turn off for very large catalogs: the page then shows placeholders)")
    max_side: int = Field(256, ge=16, le=1024, description="longest side in pixels")
    quality: int = Field(75, ge=1, le=100, description="WebP quality")


class ExportConfig(StrictModel):
    enabled: bool = True
    int8: bool = True
    tolerance: float = Field(1e-4, gt=0, description="max abs difference ONNX vs PyTorch")
    int8_min_cosine: float = Field(0.95, gt=0, le=1, description="int8 kept where every check text's cosine to fp32 is this or more")


class CollabConfig(CollabGrid):
    """The collaborative part of a hybrid version (used when interactions.path is set)."""

    window_days: float | None = Field(None, gt=0, description="only interactions this recent (before the latest)")
    valid_users: int = Field(5_000, ge=10, description="most users who hold out items for tuning (a random this many "
                             "when more have a new item in the later half of their history): each holds out a block "
                             "of their last new items, found from the history before it (offline/holdout.py)")
    valid_items: int = Field(10_000, ge=10, description="the items held out for tuning in all: an even share each "
                             "of the users holding out, at most holdout.MAX_PER_USER, from the later half of their "
                             "history; each user's recall of them one score. More items, less noise in every choice, "
                             "longer scoring; fewer on a large catalog, at most holdout.SCORED_CELLS (2e9) / its items "
                             "(2,000 at 1M items), as each is scored against every item at every point of the grids")


class RunConfig(StrictModel):
    runner: Literal["ray", "local"] = "ray"
    ray_address: str | None = Field(None, description="None: start Ray in-process; 'auto' or ray://...")
    work_dir: Path | None = Field(None, description="Ray temp files and scratch; default <out>/.work")
    keep_versions: int = Field(0, ge=0, description="0 = keep all published versions")


class PublishConfig(StrictModel):
    """Whether the new version goes live (CURRENT moves to it) when the job publishes it."""

    activate: Literal["auto", "always", "gate", "never"] = Field(
        "auto", description="always; never (publish only: `groundrec versions activate ID` later); gate: only if it "
        "is not significantly worse than the serving version on the interactions since that one's training cutoff "
        "(a refused candidate exits 3); auto: gate when there are interactions and a version is serving, else always")
    gate_alpha: float = Field(0.05, gt=0, lt=1, description="the gate refuses a candidate worse at this significance")
    gate_k: int = Field(20, ge=1, description="the gate compares recall@k")
    gate_max_users: int = Field(5_000, ge=1, description="most window users the gate scores (a seeded sample)")


class JobCatalogConfig(CatalogConfig):
    """The catalog file and, over it, the live catalog's changes (the items API's)."""

    live_items: str | None = Field(None, description="the event store whose item changes (the items API's puts, "
                                   "patches, deletes) are laid over the catalog file (sqlite:///..., redis://...); "
                                   "default: interactions.path when that is a store URL; none: the file alone")

    @field_validator("live_items")
    @classmethod
    def _a_store(cls, v: str | None) -> str | None:
        from groundrec.offline.live_items import live_items_url

        if v is not None:
            live_items_url(v, None)  # a UserError unless a store URL or none
        return v


class JobConfig(StrictModel):
    catalog: JobCatalogConfig = Field(default_factory=JobCatalogConfig)
    out: Path | None = None
    cache_dir: Path | None = Field(None, description="grounding cache; default <out>/cache")

    _local_folders = field_validator("out", "cache_dir", mode="before")(local_folder)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    vlm: VLMConfig = Field(default_factory=default_vlm_config)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    thumbnails: ThumbnailConfig = Field(default_factory=ThumbnailConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    interactions: InteractionsConfig = Field(default_factory=InteractionsConfig,
                                             description="set path to publish a hybrid (content + collaborative) version")
    collab: CollabConfig = Field(default_factory=CollabConfig)
    sequence: SequenceJobConfig = Field(default_factory=SequenceJobConfig,
                                        description="the learned profile encoder, trained and chosen on validation "
                                                    "with interactions")
    publish: PublishConfig = Field(default_factory=PublishConfig)

    @model_validator(mode="after")
    def _template_fields_exist(self) -> "JobConfig":
        unknown = set(template_fields(self.encoder.template)) - set(self.available_text_fields())
        if unknown:
            raise UserError(
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
        require_settings([("catalog.path (--catalog)", self.catalog.path), ("out (--out)", self.out)])

    @property
    def resolved_cache_dir(self) -> Path:
        assert self.out is not None
        return self.cache_dir or self.out / "cache"

    @property
    def resolved_work_dir(self) -> Path:
        assert self.out is not None
        return self.run.work_dir or self.out / ".work"


def template_fields(template: str) -> list[str]:
    """The columns a template names; ``UserError`` for a field ``shared.text.render`` cannot fill."""
    try:
        parts = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise UserError(f"encoder.template {template!r} is not a valid format string: {e}") from None
    bad = [n + ("!" + c if c else "") + (":" + f if f else "") for n, f, c in parts if f or c or not n or "." in n or "[" in n]
    if bad:
        raise UserError(f"encoder.template {template!r}: {{{bad[0]}}} is not a plain column name in braces (values are "
                        "filled in as text: no format spec, conversion, attribute or index)")
    return [name for name, _, _ in parts]


def load_job_config(path: Path | None = None, overrides: dict | None = None) -> JobConfig:
    """The job's config from an optional YAML file and dotted overrides such as {'vlm.model': DIR}."""
    return load_config(path, overrides, JobConfig)
