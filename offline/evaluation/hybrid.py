"""eval's collaborative rows: EASE alone (factorised, and recency-weighted at its own rank),
the hybrid tuned by the job's tuner (``offline.tuning.tune_hybrid``) with eval's scores
(``EvalHybridScorer``: the primary metric of the validation users, the best content profile
beside the collaborative part), the same hybrid at its full width when the width rule
narrowed it, the hybrid of each grid variant, and what the job would publish. Each model is
fitted on validation's training part to choose its parameters, then refitted on test's
training part (training + validation interactions): no test interaction is ever seen. With
``tuning.collab.train_half_life_days`` the recency-EASE row and the hybrids may fit their
interactions decayed by age, judged on eval's validation users as the job judges its own."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from groundrec.offline import collab
from groundrec.offline.collab import CollabModel
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.systems import CollabSystem, hybrid_system
from groundrec.offline.evaluation.published import published_row
from groundrec.offline.learn import fit_chosen, version_form
from groundrec.offline.projection import project
from groundrec.offline.selection import Search, coarse_to_fine, kept_if_it_beats_none, search
from groundrec.offline.tuning import HybridChoice, tune_fresh, tune_hybrid
from groundrec.offline.width_rule import user_slices
from groundrec.shared.scoring.popularity import new_items
from groundrec.shared.scoring.ranking import lift

if TYPE_CHECKING:
    from groundrec.offline.evaluation.compare import Runner

COLLAB, HYBRID = "EASE factorised (collaborative)", "groundrec hybrid (content + collaborative)"
RECENCY_FULL, RECENCY = "EASE full rank + recency (collaborative)", "EASE factorised + recency (collaborative)"
HYBRID_FULL = "groundrec hybrid at full width (what the width rule gave up)"


def hybrid_row(runner: "Runner", rep: Representation, pop: np.ndarray, profile: dict, model: CollabModel,
               weight: float, projection=None, params: dict | None = None, half_life: float = 0.0,
               fresh_weight: float = 0.0, fresh_slots: int = 0, name: str = HYBRID) -> CollabSystem:
    """The hybrid of ``rep``'s content with ``profile`` (popularity ``pop``) as a version serves it."""
    return hybrid_system(name, f"{rep.name} + interactions", runner.content(rep, pop, **profile), model, weight,
                         projection, params, half_life, fresh_weight, fresh_slots)


class EvalHybridScorer:
    """eval's ``tuning.HybridScorer``: each validation user's primary metric, the content part
    scored with the best content profile; ``on_valid(reg, dropout, decay)`` is the model fitted
    on validation's training part."""

    def __init__(self, runner: "Runner", rep: Representation, profile: dict, on_valid):
        self.runner, self.rep, self.profile, self.on_valid = runner, rep, profile, on_valid
        self.content_dim = rep.vectors.shape[1]
        self.valid = runner.data.valid
        new = new_items(runner.data.pop_valid)
        self.slices = user_slices(self.valid.relevant, new)  # what the width rule judges apart
        self.has_new = len(new) > 0
        self.recent = False  # eval's own hybrid row has no recent-popularity prior (the published row's learn stage does)
        self.fit_times = on_valid.times is not None  # a fit decayed by age (``tuning.tune_decay``)
        self._content_scores: np.ndarray | None = None
        # users with nothing to rank by: the popular fallback, as ``CollabSystem.top`` gives it on test
        self.no_profile = runner.content(rep, runner.data.pop_valid, **profile).no_profile(self.valid.history)
        self._base: tuple[tuple, np.ndarray] | None = None  # the published scores of one choice

    def _scores(self, system) -> np.ndarray:
        return system.scores(self.valid.history, self.valid.history_ts)

    def content_scores(self) -> np.ndarray:
        """The content part, the same for every model and weight: computed once."""
        if self._content_scores is None:
            self._content_scores = self._scores(self.runner.content(self.rep, self.runner.data.pop_valid,
                                                                    **self.profile))
        return self._content_scores

    def _collab(self, model: CollabModel, half_life: float) -> np.ndarray:
        return self._scores(CollabSystem(HYBRID, self.rep.name, model, half_life=half_life))

    def hybrid(self, reg: float, dropout: float, half_life: float, weights: list[float],
               train_half_life_days: float = 0.0) -> list[np.ndarray]:
        cf = self._collab(self.on_valid(reg, dropout, train_half_life_days), half_life)
        return [self.runner.valid_per_user(self.content_scores() + w * cf, no_profile=self.no_profile) for w in weights]

    def full_rank(self, reg: float, dropout: float, train_half_life_days: float = 0.0) -> int:
        return self.on_valid(reg, dropout, train_half_life_days).rank

    def _model(self, choice: HybridChoice) -> CollabModel:
        return self.on_valid(choice.reg, choice.dropout, choice.train_half_life_days)

    def at_rank(self, choice: HybridChoice, rank: int) -> np.ndarray:
        cf = self._collab(self._model(choice).truncated(rank), choice.half_life)
        return self.runner.valid_per_user(self.content_scores() + choice.weight * cf, no_profile=self.no_profile)

    def _published_scores(self, choice: HybridChoice, model: CollabModel, projected: bool) -> np.ndarray:
        runner = self.runner
        projection = (project(self.rep.vectors, model, choice.weight, runner.data.valid_histories, runner.cfg.seed,
                              choice.half_life) if projected else None)
        return self._scores(hybrid_row(runner, self.rep, runner.data.pop_valid, self.profile, model, choice.weight,
                                       projection, half_life=choice.half_life))

    def projected(self, choice: HybridChoice, rank: int) -> np.ndarray:
        return self.runner.valid_per_user(self._published_scores(choice, self._model(choice).truncated(rank), True),
                                          no_profile=self.no_profile)

    def published(self, choice: HybridChoice, fresh: list[tuple[float, int]]) -> list[np.ndarray]:
        self._content_scores = None  # not needed past the width (recomputed if asked again)
        key = (choice.reg, choice.dropout, choice.train_half_life_days, choice.half_life, choice.weight, choice.rank,
               choice.projected)
        if self._base is None or self._base[0] != key:
            model = self._model(choice).truncated(choice.rank)
            self._base = key, self._published_scores(choice, model, choice.projected)
        base, new = self._base[1], new_items(self.runner.data.pop_valid)
        return [self.runner.valid_per_user(lift(base.copy(), [fw] * len(base), new), new, slots, self.no_profile)
                for fw, slots in fresh]


class Fits:
    """The models of one grid fitted on a training part, by (reg, dropout, decay), kept while
    they fit in ``max_bytes`` (at least the three used last: the chosen model and the two fits
    of the refinement around it), as the job keeps its fits. ``times`` (aligned with
    ``histories``) are needed only for a fit decayed by age (``decay_days``)."""

    def __init__(self, histories: list[np.ndarray], n_items: int, content: np.ndarray | None, grid, seed: int,
                 max_bytes: float = 4 * 2**30, times: list[np.ndarray] | None = None):
        self.histories, self.n_items, self.content, self.grid, self.seed = histories, n_items, content, grid, seed
        self.max_bytes, self.times, self.models = max_bytes, times, {}

    def __call__(self, reg: float, dropout: float = 0.0, decay_days: float = 0.0) -> CollabModel:
        models, key = self.models, (reg, dropout, decay_days)
        if key not in models:
            if decay_days and self.times is None:
                raise ValueError("a fit decayed by age needs the histories' times")
            size = lambda m: m.query.nbytes + m.item.nbytes  # noqa: E731
            while len(models) >= 3 and sum(map(size, models.values())) > self.max_bytes:
                models.pop(next(iter(models)))
            weights = collab.decay_weights(self.times, decay_days) if decay_days else None
            models[key] = collab.fit_grid(self.histories, self.n_items, self.content, self.grid, reg, dropout,
                                          self.seed, weights)
        models[key] = models.pop(key)  # the most recently used last
        return models[key]


def ease_rows(runner: "Runner", on_valid: Fits, on_test: Fits) -> None:
    """EASE alone, as the collaborative reference: factorised at the grid's rank (its reg
    chosen on validation), and with the recency-weighted query at the model's own rank
    (exact when it fits the grid's budget), chosen by ``recency_ease``."""
    grid = runner.cfg.tuning.collab
    found = search({"reg": grid.reg}, lambda points: [runner.valid_users_scores(
        CollabSystem(COLLAB, "interactions", on_valid(p["reg"]).truncated(grid.rank).interactions_only()))
        for p in points], widenings=grid.widenings, section="tuning.collab")
    reg = found.chosen["reg"]
    runner.on_test(CollabSystem(COLLAB, "interactions", on_test(reg).truncated(grid.rank).interactions_only(),
                                params={"reg": reg, "rank": grid.rank}), found.score, search=found)
    found, decay, kept = recency_ease(runner, on_valid)
    reg, half_life = found.chosen["reg"], found.chosen["half_life"]
    model = on_test(reg, 0.0, decay or 0.0)
    params = {"reg": reg, "half_life": half_life, "rank": model.rank}
    runner.on_test(CollabSystem(recency_name(model), "interactions", model.interactions_only(), half_life=half_life,
                                params=params if decay is None else {**params, "train_half_life_days": decay}),
                   found.score if kept is None else kept.score, search=found)


def recency_ease(runner: "Runner", on_valid: Fits) -> tuple[Search, float | None, Search | None]:
    """Recency-weighted EASE as eval's row chooses it: its reg and query half-life by the
    hybrid's procedure (``selection.coarse_to_fine``, refined halfway to the neighbours), then
    its fit decayed by age (``tuning.collab.train_half_life_days``) at that reg and half-life:
    each half-life scored on eval's validation users, the best kept where it beats none by
    more than one standard error of the paired differences (``selection.kept_if_it_beats_none``,
    the job's rule). Returns the first search, the decay (0.0: none; None: none to search) and
    the decay's search (its ``chosen`` and ``scores``: what is published; None: not searched)."""
    grid = runner.cfg.tuning.collab
    name = recency_name(on_valid(grid.reg[0]))
    found = coarse_to_fine({"reg": grid.reg, "dropout": [0.0], "half_life": grid.half_life},
                           lambda points: [runner.valid_users_scores(CollabSystem(
                               name, "interactions", on_valid(p["reg"]).interactions_only(), half_life=p["half_life"]))
                               for p in points], later="dropout", at="reg",
                           refine=("reg", "half_life") if grid.refine else (), widenings=grid.widenings,
                           section="tuning.collab")
    reg, half_life = found.chosen["reg"], found.chosen["half_life"]
    days = [d for d in grid.train_half_life_days if d]
    if not days:
        return found, None, None
    decays = search({"train_half_life_days": [0.0, *days]}, lambda points: [runner.valid_users_scores(CollabSystem(
        name, "interactions", on_valid(reg, 0.0, p["train_half_life_days"]).interactions_only(), half_life=half_life))
        for p in points], section="tuning.collab")
    decay, kept = kept_if_it_beats_none(decays, "train_half_life_days")
    return found, decay, kept


def recency_name(model: CollabModel) -> str:
    return RECENCY_FULL if model.exact else RECENCY


def hybrid_rows(runner: "Runner", rep: Representation, profile: dict, grid, on_valid: Fits, on_test: Fits,
                name: str = HYBRID) -> None:
    """The hybrid of ``rep``'s content vectors and the best content ``profile`` (strategy,
    popularity weight...), chosen by the job's tuner on ``grid``, and at its full width if
    the width rule narrowed or projected it."""
    data, seed = runner.data, runner.cfg.seed
    scorer = EvalHybridScorer(runner, rep, profile, on_valid)
    c, tuning = tune_hybrid(grid, scorer, "tuning.collab")
    hl = c.query_half_life
    test_model = fit_chosen(data.test_histories, data.n_items, rep.vectors, grid, c, seed, on_test.times)
    params = {"reg": c.reg, "dropout": c.dropout, "half_life": hl, "weight": c.weight, "rank": test_model.rank,
              "projected": c.projected, "fresh_weight": c.fresh_weight, "fresh_slots": c.fresh_slots, **profile,
              **({"train_half_life_days": c.train_half_life_days} if any(grid.train_half_life_days) else {})}
    projection = project(rep.vectors, test_model, c.weight, data.test_histories, seed, hl) if c.projected else None
    runner.on_test(hybrid_row(runner, rep, data.pop_test, profile, test_model, c.weight, projection, params, hl,
                              c.fresh_weight, c.fresh_slots, name), c.score, rep.note, tuning.grid,
                   extra_widened=[w for later in (tuning.fresh, tuning.slots) if later for w in later.widened],
                   width=tuning.width, width_folds=tuning.width_folds)
    if c.weight and (not c.full_rank or c.projected) and name == HYBRID:
        # What the width rule cost: the same hybrid at its full width, beside the published one,
        # with the freshness lift and places chosen for that width (a lift is in its scores' units).
        at_full = replace(c, rank=scorer.full_rank(c.reg, c.dropout, c.train_half_life_days), projected=False,
                          full_rank=True)
        wide, _, kept = tune_fresh(grid, scorer, at_full, "tuning.collab")
        full = on_test(c.reg, c.dropout, c.train_half_life_days)
        runner.on_test(hybrid_row(runner, rep, data.pop_test, profile, full, c.weight, None,
                                  {**params, "rank": full.rank, "projected": False, "fresh_weight": wide.fresh_weight,
                                   "fresh_slots": wide.fresh_slots}, hl, wide.fresh_weight, wide.fresh_slots,
                                  name=HYBRID_FULL), kept.score, rep.note)


def collab_rows(runner: "Runner", rep: Representation | None, profile: dict | None = None) -> None:
    """The EASE rows, then (with a representation) the hybrid (``hybrid_rows``), the hybrid
    of each grid variant (``tuning.collab_variants``) and what the job would publish
    (``published_row``)."""
    data, seed = runner.data, runner.cfg.seed
    content = rep.vectors if rep is not None else None
    dim = content.shape[1] if content is not None else 0
    # exact or factorised as the version refitted on the test histories can be, on validation too
    grid = version_form(runner.cfg.tuning.collab, data.test_histories, data.n_items, dim)
    times = {stage: data.history_times(stage) for stage in ("valid", "test")}
    on_valid = Fits(data.valid_histories, data.n_items, content, grid, seed, times=times["valid"])
    on_test = Fits(data.test_histories, data.n_items, content, grid, seed, times=times["test"])
    ease_rows(runner, on_valid, on_test)
    if rep is None:
        return
    hybrid_rows(runner, rep, profile, grid, on_valid, on_test)
    on_valid.models.clear()
    on_test.models.clear()
    for variant, other in runner.cfg.tuning.variant_grids().items():
        other = version_form(other, data.test_histories, data.n_items, dim)
        hybrid_rows(runner, rep, profile, other,
                    Fits(data.valid_histories, data.n_items, content, other, seed, times=times["valid"]),
                    Fits(data.test_histories, data.n_items, content, other, seed, times=times["test"]),
                    f"{HYBRID} [{variant}]")
    published_row(runner, rep)
