"""``groundrec eval``'s configuration: what to compare, how to split, what to tune."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from groundrec.offline.config import CollabGrid, EncoderConfig, PromptConfig
from groundrec.offline.interactions import InteractionsConfig
from groundrec.offline.sequence_config import SequenceJobConfig
from groundrec.offline.vlm.registry import VLMConfig, default_vlm_config
from groundrec.shared.config import CatalogConfig, StrictModel, require_settings
from groundrec.shared.errors import UserError

REPRESENTATIONS = ("title", "metadata", "description", "vlm_free", "vlm_structured", "vlm_free_title",
                   "visual", "fusion_concat", "fusion_mean")


class SplitConfig(StrictModel):
    """Per-user temporal hold-out (the last day / last n / last fraction of each user's
    interactions is test, the same amount before it validation), one cut in time for every user
    (``global_time``: the last ``frac`` of all interactions is test, the ``frac`` before it
    validation: no system learns from anyone's future), MMRec's random 8:1:1, or an item
    cold-start split (a random share of the items is test, as many validation: all their
    interactions are held out, the systems learn from the rest)."""

    kind: Literal["temporal", "global_time", "random", "cold_items"] = "temporal"
    holdout: Literal["last_day", "last_n", "last_frac"] = "last_day"
    n: int = Field(1, ge=1, description="last_n: interactions per hold-out part (each cut moved back to the start "
                   "of its moment: interactions at one time, a basket, stay in one part)")
    frac: float = Field(0.2, gt=0, lt=0.5, description="last_frac: share of each user's interactions per part; "
                        "global_time: share of all interactions (by time) in each of test and validation")
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cold_share: float = Field(0.1, gt=0, lt=0.5, description="cold_items: share of the items with interactions held "
                              "out as test items (and as many as validation items)")
    seed: int = 0


class TuningConfig(StrictModel):
    """Grids searched on validation users only; the winners are then reported on test."""

    half_life_days: list[float] = Field(default_factory=lambda: [7.0, 30.0, 120.0])
    n_interests: list[int] = Field(default_factory=lambda: [2, 3])
    popularity_weight: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1])
    fusion_text_weight: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    als_regularization: list[float] = Field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0],
                                            description="ALS (implicit) baseline: regularisation grid")
    als_alpha: list[float] = Field(default_factory=lambda: [0.3, 1.0, 10.0], description="ALS baseline: confidence scale grid")
    widenings: int = Field(2, ge=0, le=5, description="a value chosen on the edge of its grid: add the next value "
                           "beyond it and choose again, at most this many times (recorded in the row)")
    collab: CollabGrid = Field(default_factory=CollabGrid, description="the collaborative and hybrid rows: the "
                               "job's collab grids and rules")
    collab_variants: dict[str, dict] = Field(default_factory=dict, description="more hybrid rows in the same run, "
                                             "each tuned on tuning.collab with these settings changed, labelled "
                                             "'groundrec hybrid (content + collaborative) [NAME]', e.g. {before: "
                                             "{full_rank_max_mb: 0, rank_confidence: 0}}: configurations compared "
                                             "side by side, on the same users")

    @model_validator(mode="after")
    def _variants_are_grids(self) -> "TuningConfig":
        self.variant_grids()  # a UserError naming the variant unless each is a valid grid
        return self

    def variant_grids(self) -> dict[str, CollabGrid]:
        """Each variant's grid: tuning.collab with the variant's settings."""
        from pydantic import ValidationError

        out = {}
        for name, changes in self.collab_variants.items():
            try:
                out[name] = CollabGrid(**{**self.collab.model_dump(), **changes})
            except (ValidationError, TypeError) as e:
                raise UserError(f"tuning.collab_variants.{name}: {e}") from None
        return out


class EvalConfig(StrictModel):
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
    templates: dict[str, str] = Field(default_factory=dict, description="more text representations, name -> "
                                      "template over catalog columns and grounded fields, e.g. "
                                      "title_genres: '{name}. {genres}' or look: '{title}. {vlm_text}'")
    title_column: str = "title"
    description_column: str = "description"
    metadata_columns: list[str] | None = Field(None, description="default: every string column but id, image, title, description")
    vlm: VLMConfig = Field(default_factory=default_vlm_config)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    vision_model: str = Field("openai/clip-vit-base-patch32", description="any HF image model: CLIP, ViT, ResNet...")
    vision_batch_size: int = Field(32, ge=1)
    fidelity: dict[str, str] = Field(default_factory=dict, description="VLM field -> catalog column to score it against")
    synonyms: dict[str, str] = Field(default_factory=dict, description="extra value synonyms for fidelity, e.g. gray: grey")
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    runner: Literal["ray", "local"] = "local"
    sequence: SequenceJobConfig = Field(default_factory=SequenceJobConfig, description="the job's sequence section "
                                        "(same defaults): when the job would train the learned profile encoder "
                                        "(sequence.enabled), the 'groundrec published' row trains and chooses it "
                                        "as the job does")
    sasrec_row: bool = Field(False, description="also report SASRec as published (Kang & McAuley 2018: item ids only, "
                             "binary cross-entropy against one random item; offline/evaluation/sasrec.py), the "
                             "learned encoder's literature reference: stopped on validation, retrained for the "
                             "chosen epochs on every user's training and validation parts (minutes on retail)")
    sasrec_max_steps: int = Field(4000, ge=0, description="SASRec's budget: optimizer steps per training at most "
                                  "(0: the paper's 200 epochs, ended earlier only by validation's patience)")
    sequence_row: bool = Field(False, description="also report the learned profile encoder as its own row, "
                               "'groundrec sequence encoder' (trained by the published row's learn stage, scored "
                               "on test whatever validation decided); it costs the encoder's training (minutes "
                               "on a catalog of retail's size); on whenever sequence.enabled is")

    @model_validator(mode="before")
    @classmethod
    def _catalog_text_columns_from_eval(cls, data):
        """A ``catalog:`` block without ``text_columns`` must not bring the job's default
        (title, description): eval names its text columns itself (title_column,
        description_column, metadata_columns, templates)."""
        if isinstance(data, dict) and isinstance(data.get("catalog"), dict) and "text_columns" not in data["catalog"]:
            data = {**data, "catalog": {**data["catalog"], "text_columns": []}}
        return data

    @field_validator("representations")
    @classmethod
    def _known_representations(cls, v: list[str]) -> list[str]:
        unknown = [r for r in v if r not in REPRESENTATIONS]
        if unknown:
            raise UserError(f"unknown representation(s) {unknown}; choose from {list(REPRESENTATIONS)}")
        return v

    @field_validator("templates")
    @classmethod
    def _templates_parse(cls, v: dict[str, str]) -> dict[str, str]:
        from groundrec.offline.config import template_fields

        for name, template in v.items():
            if name in REPRESENTATIONS:
                raise UserError(f"template name {name!r} is a built-in representation; choose another name")
            if not template_fields(template):
                raise UserError(f"template {name!r} ({template!r}) names no column: write e.g. '{{title}}. {{genres}}'")
        return v

    @property
    def representation_names(self) -> list[str]:
        """The built-in representations asked for, then the user's templates."""
        return [*self.representations, *[n for n in self.templates if n not in self.representations]]

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise UserError("ks must be a non-empty list of positive cut-offs, e.g. [5, 10, 20, 50]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _primary_metric_is_computed(self) -> "EvalConfig":
        name, _, k = self.primary_metric.partition("@")
        if name not in ("recall", "ndcg", "hit_rate", "precision", "mrr") or not k.isdigit() or int(k) not in self.ks:
            raise UserError(f"primary_metric {self.primary_metric!r} must be one of recall/ndcg/hit_rate/precision/mrr "
                             f"@ one of ks {self.ks}, e.g. 'recall@20'")
        return self

    def require_paths(self) -> None:
        require_settings([("catalog.path (--catalog)", self.catalog.path),
                          ("interactions.path (--interactions)", self.interactions.path), ("out (--out)", self.out)])

    @property
    def resolved_cache_dir(self) -> Path:
        assert self.out is not None
        return self.cache_dir or self.out / "cache"
