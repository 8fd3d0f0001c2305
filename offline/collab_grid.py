"""The collaborative part's grids: how a hybrid (and a version's priors) are chosen on
validation, the one declaration used by the job's learn stage and by ``groundrec eval``."""

from __future__ import annotations

from pydantic import Field, field_validator

from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError


class CollabGrid(StrictModel):
    """How the collaborative part of a hybrid is chosen on validation: the one declaration of
    its grids, used by the job's learn stage and by ``groundrec eval`` (``tuning.collab``)."""

    rank: int = Field(128, ge=1, le=1024, description="collaborative vector size of a factorised model (one whose "
                      "exact form does not fit full_rank_max_mb), and the unit of the narrower widths tried: rank/4, "
                      "rank/2, rank, 2 x rank, 4 x rank below the model's own (the index grows by the published rank)")
    full_rank_max_mb: float = Field(2048.0, ge=0, description="keep the model exact (full rank: a head item's "
                                    "row of B, no factorisation) when the version's collaborative vectors and "
                                    "index then take at most this many MB: 4 x items x (d + 3 x head items) bytes "
                                    "(retail, 3,658 items: 166 MB; 10,000 items all in the head: 1.2 GB; the "
                                    "service holds it once per compute process); beyond it factorised at rank. "
                                    "The width rule still publishes a narrower rank where validation shows the "
                                    "exact model gains nothing. 0: always factorised (serves faster: on retail "
                                    "the exact model serves at 60-72% of the factorised rate, docs/hybrid.md)")
    rank_tolerance: float = Field(0.02, ge=0, le=1, description="publish the narrowest width (narrower ranks, "
                                  "then the projection) whose validation recall loss against the full model's, "
                                  "plus rank_confidence standard errors of that paired loss, is within this "
                                  "fraction of the full model's recall, and whose loss on the cold users (a held-out "
                                  "item new to training) and on the warm ones, less rank_confidence standard errors, "
                                  "is within this fraction of that slice's recall: a narrower index serves faster "
                                  "(offline/width_rule.py)")
    rank_confidence: float = Field(1.0, ge=0, description="standard errors (of the per-user paired loss on "
                                   "validation) added to a narrower width's loss before it is held against "
                                   "rank_tolerance, so that the loss accepted holds on users it was not chosen on; "
                                   "0: the mean loss alone")
    project: bool = Field(True, description="index the hybrid at the content embedding's width (a projection "
                          "fitted to the users' profiles) when that passes the width rule (rank_tolerance) against "
                          "the full model: it then serves at content-only cost; tried only when the chosen rank "
                          "is at most the content's width")
    reg: list[float] = Field(default_factory=lambda: [10.0, 100.0, 1000.0], min_length=1,
                             description="EASE regularisation grid, chosen on validation")
    dropout: list[float] = Field(default_factory=lambda: [0.0, 0.5], min_length=1,
                                 description="input dropout of the collaborative model, chosen on validation with "
                                             "reg: 0 is EASE, p > 0 is DLAE (Steck 2020: a popular item is "
                                             "regularised more); each value costs one more fit per reg")
    weight: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
                                min_length=1,
                                description="weight of the collaborative score next to the content cosine, chosen "
                                            "on validation (0: content only)")
    half_life: list[float] = Field(default_factory=lambda: [0.0, 10.0, 40.0], min_length=1,
                                   description="recency of a history's collaborative query: each item weighted by "
                                               "0.5 ** (its age in items / half_life), chosen on validation (0: "
                                               "every item alike)")
    fresh_weight: list[float] = Field(default_factory=lambda: [0.0, 0.03, 0.1, 0.3, 1.0], min_length=1,
                                      description="hybrid: added to the score of an item with no interaction in the "
                                                  "window (a new item, which the collaborative part cannot know), "
                                                  "chosen on validation after the rest (0: none)")
    fresh_slots: list[int] = Field(default_factory=lambda: [1], min_length=1,
                                   description="hybrid: of each list, this many places kept for the best new items "
                                               "(their content places them): an exposure policy, 1 by default; with "
                                               "several values, chosen on validation after the lift (the most whose "
                                               "recall is within one standard error of the best); a request can "
                                               "set its own")
    recent_weight: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3], min_length=1,
                                       description="the version's recent-popularity prior: w x ln(1 + the item's "
                                                   "interactions in the window's last recent_days), added to every "
                                                   "list's scores; the best on validation, kept where it beats none by "
                                                   "more than one standard error of the paired differences (0: none)")
    profile_half_life_days: list[float] = Field(default_factory=lambda: [1.0, 7.0, 30.0],
                                                description="content alone (weight 0): the content profile's "
                                                            "recency, each history item weighted by 0.5 ** (its days "
                                                            "before the newest / half-life) (the recency strategy); the "
                                                            "best on validation, kept where it beats the mean by more "
                                                            "than one standard error of the paired differences, and "
                                                            "served as the version's default (0 or []: the mean)")
    train_half_life_days: list[float] = Field(default_factory=lambda: [30.0, 90.0, 365.0],
                                              description="hybrid: the collaborative model fitted with each "
                                                          "interaction weighted by 0.5 ** (its days before the newest "
                                                          "interaction fitted / half-life) (co-purchases drift): each "
                                                          "tried at the chosen model after the grid, judged on the "
                                                          "validation users, the best kept where it beats no decay by "
                                                          "more than one standard error of the paired differences ([]: "
                                                          "every interaction alike; docs/hybrid.md, 'The fit's decay "
                                                          "by age')")
    recent_days: float = Field(30.0, gt=0, description="the days the recent-popularity prior counts interactions in "
                               "(up to the window's latest)")
    refine: bool = Field(True, description="after the grid, try reg and half_life halfway (geometrically) to the "
                         "neighbours of the chosen values: two more fits and four more scoring passes")
    widenings: int = Field(2, ge=0, le=5, description="a reg or weight chosen on the edge of its grid: add the next "
                           "value beyond it and choose again, at most this many times (recorded in the report)")
    max_dense_items: int = Field(20_000, ge=2, description="EASE fits the most-interacted this many items "
                                 "(~12 bytes x items^2 of memory while fitting); the others come from content")

    @field_validator("reg", "weight", "half_life", "fresh_weight", "fresh_slots", "recent_weight",
                     "profile_half_life_days", "train_half_life_days")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v):
            raise UserError(f"grid values must be >= 0, got {v}")
        return sorted(set(v))

    @field_validator("dropout")
    @classmethod
    def _probability(cls, v: list[float]) -> list[float]:
        if any(not 0 <= x < 1 for x in v):
            raise UserError(f"dropout values must be in [0, 1), got {v}")
        return sorted(set(v))
