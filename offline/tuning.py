"""The hybrid's tuner: one procedure for the job's learn stage and for ``groundrec eval``.

Each passes a ``HybridScorer`` (how a candidate configuration scores on its validation users);
the order of the search, its rules and its grids (``config.CollabGrid``) are written here
once, on the one selection procedure (``selection.search``, ``selection.coarse_to_fine``):

1. reg x half_life x weight with the first dropout (EASE by default), then the dropout grid at
   the chosen reg only (each dropout value costs one fit, not one per reg), then reg and
   half_life each refined halfway to their neighbours: the smallest weight (0: content alone)
   within one standard error of the best validation score; for a weight above 0, the fit
   decayed by age where the validation users say it wins (``tune_decay``);
2. for a weight above 0, the width (``width_rule.narrowest``): every narrower rank of the
   ladder (``width_rule.smaller_ranks``) is scored, and the narrowest whose paired loss
   against the full model, plus ``rank_confidence`` standard errors of it, is within
   ``rank_tolerance`` of the full model's score, and that clearly costs neither slice of the
   users (cold, warm: the scorer's ``slices``), is published; then the projection to the
   content's width by the same rule;
3. for content alone, where the scorer has the histories' times (``profile_times``), the content
   profile's recency (``tune_profile``), kept where it beats the mean by more than one standard error;
4. where the scorer can score it (``recent``), the version's recent-popularity prior on the published
   scoring (content alone's too, its last stage): the best weight, kept where it beats none so;
5. the freshness prior's weight on the published scoring with that prior (the largest within
   one standard error of the best: a new item has no recent interactions, so its lift is chosen
   against the prior it competes with), then the places kept for new items (the most within it).

It returns what was chosen (``HybridChoice``) and what every stage scored (``HybridTuning``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from groundrec.offline.config import CollabGrid
from groundrec.offline.selection import Search, beats_by_one_standard_error, coarse_to_fine, kept_if_it_beats_none, search
from groundrec.offline.width_rule import narrowest

HYBRID_AXES = ("reg", "dropout", "half_life", "weight")


@dataclass(frozen=True)
class HybridChoice:
    """The hybrid configuration chosen on validation. Weight 0 is content alone: then nothing
    past the grid was tuned (the full rank, no projection, no freshness prior, no place)."""

    reg: float
    dropout: float
    half_life: float  # as chosen; the query's half-life only with a collaborative part (``query_half_life``)
    weight: float
    rank: int  # the published rank (the full rank when nothing narrower was tried)
    projected: bool = False  # indexed at the content's width through a projection
    full_rank: bool = False  # the model's own rank: a refit on more data keeps its own (exact: its head's)
    score: float | None = None  # the validation score of the published setting (None: nothing scored)
    fresh_weight: float = 0.0  # added to the score of an item with no interaction
    fresh_slots: int = 0  # of each list, the places kept for such items
    recent_weight: float = 0.0  # the recent-popularity prior's weight (x ln(1 + recent interactions))
    profile_half_life_days: float = 0.0  # content alone: the content profile's recency in days (0: the mean)
    train_half_life_days: float = 0.0  # hybrid: the fit's interactions decayed by their age in days (0: alike)

    @property
    def hybrid(self) -> bool:
        return bool(self.weight)

    @property
    def query_half_life(self) -> float:
        """The collaborative query's half-life as served: none without a collaborative part."""
        return self.half_life if self.weight else 0.0

    @classmethod
    def untuned(cls, grid: CollabGrid) -> "HybridChoice":
        """Content alone when there is nothing to validate on: the grids' first model, weight 0."""
        return cls(float(grid.reg[0]), float(grid.dropout[0]), 0.0, 0.0, grid.rank)


@dataclass(frozen=True)
class HybridTuning:
    """What each stage of the tuner scored: the grid search (every point, widenings and
    warnings), the mean validation score of each narrower rank and of each projected rank
    tried, what each width tried costs (``width``: rank, projected, score, loss and its
    standard error against the full model, on all users and per slice, whether within the
    rule; the full model first; ``width_folds``: the rule on each half of the users, its loss
    on the other), and the freshness prior's and kept places' searches (None for content
    alone)."""

    grid: Search
    ranks: dict[int, float] = field(default_factory=dict)
    projected: dict[int, float] = field(default_factory=dict)
    fresh: Search | None = None
    slots: Search | None = None
    width: list[dict] = field(default_factory=list)
    width_folds: list[dict] = field(default_factory=list)  # the rule on one half of the users, checked on the other
    recent: Search | None = None  # the recent-popularity prior's search (None: not scored)
    profile: Search | None = None  # content alone: the content profile's recency (None: not scored)
    decay: Search | None = None  # hybrid: the fit's decay by age, searched with the weight (None: not scored)

    @property
    def widened(self) -> list[dict]:
        """Every value added beyond an edge, in the order of the stages."""
        return [*self.grid.widened, *(self.decay.widened if self.decay else []),
                *(self.recent.widened if self.recent else []),
                *(self.fresh.widened if self.fresh else []), *(self.slots.widened if self.slots else [])]

    @property
    def warnings(self) -> list[str]:
        """The grid's, the recent prior's and the freshness prior's values still on a widenable edge."""
        return [*self.grid.warnings, *(self.recent.warnings if self.recent else []),
                *(self.fresh.warnings if self.fresh else [])]

    @property
    def last(self) -> Search:
        """The last stage that scored the published setting: its chosen point's per-user scores
        are the version's validation scores."""
        return self.slots or self.recent or self.profile or self.grid


class HybridScorer(Protocol):
    """How a candidate configuration scores on validation: per-user scores (``narrowest``
    compares a width with the full model user by user). ``content_dim``: the content
    embedding's width (what a projection indexes at); ``slices``: masks over the validation
    users the width rule also judges on their own (``width_rule.within``): "cold", the users
    whose held-out items include one with no training interaction, and "warm", the rest."""

    content_dim: int
    slices: dict[str, np.ndarray]
    has_new: bool  # whether any item has no training interaction (else a lift or a place changes no list)
    recent: bool  # whether ``published`` scores ``choice.recent_weight`` (the recent-popularity prior)
    profile_times: bool  # whether ``published`` scores ``choice.profile_half_life_days`` (the histories' times)
    fit_times: bool  # whether ``hybrid`` fits a model decayed by age (the training parts' times)

    def hybrid(self, reg: float, dropout: float, half_life: float, weights: list[float],
               train_half_life_days: float = 0.0) -> list[np.ndarray]:
        """Per-user scores of content + each weight x the collaborative model (reg, dropout,
        its fit's decay) with the query's half-life: one model, every weight."""

    def full_rank(self, reg: float, dropout: float, train_half_life_days: float = 0.0) -> int:
        """The model's own rank, the narrower ones are compared with (exact: its head's)."""

    def at_rank(self, choice: HybridChoice, rank: int) -> np.ndarray:
        """Per-user scores of ``choice``'s hybrid with its model truncated to ``rank``."""

    def projected(self, choice: HybridChoice, rank: int) -> np.ndarray:
        """... at ``rank``, projected to the content's width, as the service scores it."""

    def published(self, choice: HybridChoice, fresh: list[tuple[float, int]]) -> list[np.ndarray]:
        """Per-user scores of ``choice`` as published (its rank, its projection, its
        recent-popularity prior), for each (freshness prior weight, places kept for new items);
        for content alone (weight 0), content's with its prior and its profile's recency."""


def by_model(points: list[dict],
             hybrid: Callable[[float, float, float, list[float]], list[np.ndarray]]) -> list[np.ndarray]:
    """The grid's points scored one model (reg, dropout, half_life) at a time, every weight of
    it from the same collaborative scores, in the points' order."""
    model_of = lambda p: (p["reg"], p["dropout"], p["half_life"])  # noqa: E731
    out = {}
    for model in dict.fromkeys(map(model_of, points)):
        weights = [p["weight"] for p in points if model_of(p) == model]
        out.update({(*model, w): scores for w, scores in zip(weights, hybrid(*model, weights))})
    return [out[(*model_of(p), p["weight"])] for p in points]


def tune_hybrid(grid: CollabGrid, scorer: HybridScorer, section: str) -> tuple[HybridChoice, HybridTuning]:
    """The hybrid chosen on validation by ``scorer``'s scores, in the stages above; ``section``
    names the grid's place in the config (in warnings)."""
    found = coarse_to_fine({axis: getattr(grid, axis) for axis in HYBRID_AXES},
                           lambda points: by_model(points, scorer.hybrid), later="dropout", at="reg",
                           refine=("reg", "half_life") if grid.refine else (), simplest="weight",
                           widenings=grid.widenings, relevant=lambda p: p if p["weight"] else {},
                           limits={"dropout": (0.0, 1.0)}, section=section)
    reg, dropout, half_life, weight = (found.chosen[axis] for axis in HYBRID_AXES)
    choice = HybridChoice(float(reg), float(dropout), float(half_life), float(weight), scorer.full_rank(reg, dropout),
                          score=found.score)
    if not choice.weight:
        choice, profile = tune_profile(grid, scorer, choice, section)
        choice, recent = tune_recent(grid, scorer, choice, section)
        return choice, HybridTuning(found, recent=recent, profile=profile)
    full = found.scores[tuple(found.chosen[axis] for axis in HYBRID_AXES)]  # per user, the full model
    choice, decay, full = tune_decay(grid, scorer, choice, full, section, found.axes["weight"])
    width = narrowest(choice.rank, full, grid.rank_tolerance, lambda r: scorer.at_rank(choice, r),
                      (lambda r: scorer.projected(choice, r)) if grid.project else None, grid.rank,
                      grid.rank_confidence, scorer.content_dim, scorer.slices)
    ranks = {w["rank"]: w["score"] for w in width.tried[1:] if not w["projected"]}
    projected = {w["rank"]: w["score"] for w in width.tried if w["projected"]}
    choice = replace(choice, rank=width.rank, projected=width.projected, score=width.score,
                     full_rank=width.rank == choice.rank)
    choice, recent = tune_recent(grid, scorer, choice, section)  # before the lift: new items then compete with it
    choice, fresh, slots = tune_fresh(grid, scorer, choice, section)
    return choice, HybridTuning(found, ranks, projected, fresh, slots, width.tried, width.folds, recent, decay=decay)


def tune_decay(grid: CollabGrid, scorer: HybridScorer, choice: HybridChoice, before: np.ndarray, section: str,
               weights: list[float]) -> tuple[HybridChoice, Search | None, np.ndarray]:
    """The model fitted with each interaction weighted by ``0.5 ** (age / half-life)``, judged on
    the validation users, as every other choice: each of ``grid.train_half_life_days`` and none,
    each at its best of ``weights`` (the grid's, as widened); the best half-life kept where it
    beats none by more than one standard error of the paired differences, its weight then the
    simplest within one standard error of the best (a decayed fit scores on another scale).
    (Judged on a forward validation instead, the interactions of the last days after a cut in
    time, retail kept 30 days where one cut in time gains most and each user's last part loses
    9%; the validation users keep 90 days, which gains under either: docs/hybrid.md.) Returns
    the choice, the search (None: not scored) and the validation users' scores of the choice."""
    c, days = choice, [d for d in grid.train_half_life_days if d]
    if not days or not getattr(scorer, "fit_times", False):
        return choice, None, before

    def score(points: list[dict]) -> list[np.ndarray]:  # one fit per half-life, every weight from it
        out = {}
        for d in dict.fromkeys(p["train_half_life_days"] for p in points):
            ws = [p["weight"] for p in points if p["train_half_life_days"] == d]
            out.update({(d, w): s for w, s in zip(ws, scorer.hybrid(c.reg, c.dropout, c.half_life, ws, d))})
        return [out[p["train_half_life_days"], p["weight"]] for p in points]

    axes = lambda d_axis: {"train_half_life_days": d_axis, "weight": [w for w in weights if w]}  # noqa: E731
    found = search(axes([0.0, *days]), score, simplest="weight", section=section)  # not widened
    mean = lambda p: found.scores[p].mean()  # noqa: E731
    top = lambda d: max(((d, w) for w in found.axes["weight"]), key=mean)  # noqa: E731  (a half-life's best weight)
    best, none = max(map(top, days), key=mean), top(0.0)
    rule = {"best": dict(zip(("train_half_life_days", "weight"), best)),
            **beats_by_one_standard_error(found.scores[best], found.scores[none])}
    if not rule["wins"]:
        return c, replace(found, rule=rule, chosen={"train_half_life_days": 0.0}, score=float(mean(none))), before
    mine = search(axes([best[0]]), lambda points: [found.scores[p["train_half_life_days"], p["weight"]]
                                                   for p in points], simplest="weight", section=section)
    d, w = float(best[0]), float(mine.chosen["weight"])
    c = replace(c, weight=w, train_half_life_days=d, rank=scorer.full_rank(c.reg, c.dropout, d), score=mine.score)
    return c, replace(found, rule=rule, chosen={"train_half_life_days": d}, score=float(mean(best))), mine.scores[d, w]


def tune_fresh(grid: CollabGrid, scorer: HybridScorer, choice: HybridChoice,
               section: str) -> tuple[HybridChoice, Search, Search]:
    """The last stage, on ``choice`` as published (its rank, its projection): the largest lift
    of new items whose validation score is within one standard error of the best (all the
    exposure that costs nothing measurable), then as many places kept for them as that rule
    allows. A lift is in the scores' own units, so a setting of another width (eval's row at
    full width) has its own. Where validation has no new item nothing can be measured (every
    lift scores the same, and the largest, widened, was published: 11.1, which would fill a
    list with the live items added later): no lift and no place then."""
    measurable = scorer.has_new
    fresh = search({"fresh_weight": grid.fresh_weight if measurable else [0.0]},
                   lambda points: scorer.published(choice, [(p["fresh_weight"], 0) for p in points]),
                   simplest="fresh_weight", simplest_is_largest=True, widenings=grid.widenings if measurable else 0,
                   section=section)
    choice = replace(choice, fresh_weight=float(fresh.chosen["fresh_weight"]))
    slots = search({"fresh_slots": grid.fresh_slots if measurable else [0]},
                   lambda points: scorer.published(choice, [(choice.fresh_weight, p["fresh_slots"]) for p in points]),
                   simplest="fresh_slots", simplest_is_largest=True, section=section)
    # the score of the setting as published: its lift and kept places in it (the manifest's, the summary's)
    return replace(choice, fresh_slots=int(slots.chosen["fresh_slots"]), score=slots.score), fresh, slots


def tune_recent(grid: CollabGrid, scorer: HybridScorer, choice: HybridChoice,
                section: str) -> tuple[HybridChoice, Search | None]:
    """The version's recent-popularity prior on ``choice`` as published so far (its rank and
    projection; the lift and places come after, with the prior): the best weight of the grid
    (widened at its upper edge), published only where it beats no prior on the same users by
    more than one standard error of the paired per-user differences
    (``selection.beats_by_one_standard_error``, the learned encoder's rule, here for the best
    of several weights: a looser bar). The search's ``chosen`` is what is published, its
    ``rule`` the paired comparison. None where the scorer cannot score it or the grid holds no
    weight above 0."""
    if not getattr(scorer, "recent", False) or not any(grid.recent_weight):
        return choice, None
    published = (choice.fresh_weight, choice.fresh_slots)
    found = search({"recent_weight": sorted({0.0, *grid.recent_weight})},
                   lambda points: [scorer.published(replace(choice, recent_weight=p["recent_weight"]), [published])[0]
                                   for p in points],
                   widenings=grid.widenings, section=section)
    weight, found = kept_if_it_beats_none(found, "recent_weight")
    return replace(choice, recent_weight=weight, score=found.score), found


def tune_profile(grid: CollabGrid, scorer: HybridScorer, choice: HybridChoice,
                 section: str) -> tuple[HybridChoice, Search | None]:
    """Content alone: the content profile's recency, the half-life in days of the ``recency``
    strategy (each history item weighs 0.5 ** (its days before the newest / half-life)), the
    best of ``grid.profile_half_life_days`` kept only where it beats the mean on the same users
    by more than one standard error of the paired differences (``tune_recent``'s rule); the
    version then serves it by default. A hybrid's recency is its collaborative query's
    (``half_life``, in items). None where the scorer has no times or the grid holds none."""
    if not getattr(scorer, "profile_times", False) or not any(grid.profile_half_life_days):
        return choice, None
    found = search({"profile_half_life_days": sorted({0.0, *grid.profile_half_life_days})},
                   lambda points: [scorer.published(replace(choice, profile_half_life_days=p["profile_half_life_days"]),
                                                    [(0.0, 0)])[0] for p in points], section=section)
    days, found = kept_if_it_beats_none(found, "profile_half_life_days")
    return replace(choice, profile_half_life_days=days, score=found.score), found

