"""What the learn stage reports: the model it published (or would have), the choice made on
validation and what every stage of the tuner scored, the interaction window. The job's
summary reads its fields; the manifest stores ``to_manifest()`` (as ``collab`` for a hybrid
version, as ``learn`` for a content-only one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from groundrec.offline.holdout import METRIC
from groundrec.offline.tuning import HybridChoice, HybridTuning


@dataclass(frozen=True)
class Window:
    """The interactions the stage learned from."""

    days: float | None  # the configured window (None: every interaction)
    start: str  # ISO time of the first interaction
    end: str  # ... of the last
    interactions: int
    users: int
    unknown_items_dropped: int  # rows whose item is not published

    def to_manifest(self) -> dict:
        return {"days": self.days, "from": self.start, "to": self.end, "interactions": self.interactions,
                "users": self.users, "unknown_items_dropped": self.unknown_items_dropped}


@dataclass(frozen=True)
class LearnReport:
    model: dict  # the published model's description (``CollabModel.info``); content only: its name, rank, reg, dropout
    choice: HybridChoice
    window: Window
    validation_users: int
    axes: dict[str, list]  # the hybrid's grid as searched, widenings included (as configured if nothing was)
    scores: dict[str, float] = field(default_factory=dict)  # the mean validation score of everything scored, by name
    tuning: HybridTuning | None = None  # None: no validation user, nothing tuned
    projection: dict | None = None  # the projection's description (``Projection.info``), or None
    seconds: float = 0.0
    validation_items: int = 0  # the items held out of those users (one each unless users are few: holdout.HeldOut)
    recent_days: float = 30.0  # the days the recent-popularity prior counts in (``collab.recent_days``)

    @property
    def hybrid(self) -> bool:
        """Whether a collaborative part is published (validation chose a weight above 0)."""
        return self.choice.hybrid

    @property
    def metric(self) -> str:
        return METRIC

    @property
    def model_name(self) -> str:
        return self.model["model"]

    @property
    def rank(self) -> int:
        """The published model's rank."""
        return int(self.model["rank"])

    @property
    def head_items(self) -> int:
        return int(self.model.get("head_items", 0))

    @property
    def items_from_content(self) -> int:
        return int(self.model.get("items_from_content", 0))

    @property
    def projected_from(self) -> int | None:
        """The full hybrid width the index was projected from (None: not projected)."""
        return int(self.projection["from"]) if self.projection else None

    @property
    def content_score(self) -> float | None:
        """Content alone's validation score (None: nothing scored)."""
        return self.scores.get("content")

    @property
    def warnings(self) -> list[str]:
        return self.tuning.warnings if self.tuning else []

    def to_manifest(self) -> dict:
        """The report as the manifest stores it (the keys, their order and values are the
        version's record: a reader may depend on any of them)."""
        c, t = self.choice, self.tuning
        return {
            **self.model, "weight": c.weight, "query_half_life": c.query_half_life, "fresh_weight": c.fresh_weight,
            "fresh_slots": c.fresh_slots, "recent_weight": c.recent_weight, "recent_days": self.recent_days,
            "profile_half_life_days": c.profile_half_life_days, "train_half_life_days": c.train_half_life_days,
            "hybrid": self.hybrid, "projection": self.projection,
            "window": self.window.to_manifest(),
            "validation": {"users": self.validation_users, "items": self.validation_items, "metric": self.metric,
                           "chosen": {"reg": c.reg, "dropout": c.dropout, "half_life": c.half_life, "weight": c.weight,
                                      "rank": c.rank, "full_rank": c.full_rank, "projected": c.projected,
                                      "score": c.score},
                           "scores": self.scores, "grid": self.axes,
                           "widened": t.widened if t else [], "grid_warnings": self.warnings,
                           "fresh": t.fresh.report() if t and t.fresh else None,
                           "fresh_slots": t.slots.report() if t and t.slots else None,
                           "recent": t.recent.report() if t and t.recent else None,
                           "profile": t.profile.report() if t and t.profile else None,
                           "decay": t.decay.report() if t and t.decay else None,
                           "width": t.width if t else [], "width_folds": t.width_folds if t else []},
            "learn_seconds": self.seconds,
        }
