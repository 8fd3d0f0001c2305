"""eval's collaborative rows: factorised EASE alone, the hybrid tuned by the job's tuner
(``offline.tuning.tune_hybrid``) with eval's scores (``EvalHybridScorer``: the primary metric
of the validation users, the best content profile beside the collaborative part), and the
same hybrid at its full width when the width rule narrowed it. Each model is fitted on
validation's training part to choose its parameters, then refitted on test's training part
(training + validation interactions): no test interaction is ever seen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from groundrec.offline import collab
from groundrec.offline.collab import CollabModel
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.systems import CollabSystem, hybrid_system
from groundrec.offline.learn import project
from groundrec.offline.selection import search
from groundrec.offline.tuning import HybridChoice, tune_hybrid
from groundrec.shared.scoring.popularity import new_items
from groundrec.shared.scoring.ranking import lift

if TYPE_CHECKING:
    from groundrec.offline.evaluation.compare import Runner

COLLAB, HYBRID = "EASE factorised (collaborative)", "groundrec hybrid (content + collaborative)"
HYBRID_FULL = "groundrec hybrid at full width (what the width rule gave up)"


def hybrid_row(runner: "Runner", rep: Representation, pop: np.ndarray, profile: dict, model: CollabModel,
               weight: float, projection=None, params: dict | None = None, half_life: float = 0.0,
               fresh_weight: float = 0.0, fresh_slots: int = 0, name: str = HYBRID) -> CollabSystem:
    """The hybrid of ``rep``'s content with ``profile`` (popularity ``pop``) as a version serves it."""
    return hybrid_system(name, f"{rep.name} + interactions", runner.content(rep, pop, **profile), model, weight,
                         projection, params, half_life, fresh_weight, fresh_slots)


class EvalHybridScorer:
    """eval's ``tuning.HybridScorer``: each validation user's primary metric, the content part
    scored with the best content profile; ``on_valid(reg, dropout)`` is the model fitted on
    validation's training part."""

    def __init__(self, runner: "Runner", rep: Representation, profile: dict, on_valid):
        self.runner, self.rep, self.profile, self.on_valid = runner, rep, profile, on_valid
        self.valid = runner.data.valid
        self._content_scores: np.ndarray | None = None
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

    def hybrid(self, reg: float, dropout: float, half_life: float, weights: list[float]) -> list[np.ndarray]:
        cf = self._collab(self.on_valid(reg, dropout), half_life)
        return [self.runner.valid_per_user(self.content_scores() + w * cf) for w in weights]

    def full_rank(self, reg: float, dropout: float) -> int:
        return self.on_valid(reg, dropout).query.shape[1]

    def at_rank(self, choice: HybridChoice, rank: int) -> float:
        cf = self._collab(self.on_valid(choice.reg, choice.dropout).truncated(rank), choice.half_life)
        return float(self.runner.valid_per_user(self.content_scores() + choice.weight * cf).mean())

    def _published_scores(self, choice: HybridChoice, model: CollabModel, projected: bool) -> np.ndarray:
        runner = self.runner
        projection = (project(self.rep.vectors, model, choice.weight, runner.data.valid_histories, runner.cfg.seed,
                              choice.half_life) if projected else None)
        return self._scores(hybrid_row(runner, self.rep, runner.data.pop_valid, self.profile, model, choice.weight,
                                       projection, half_life=choice.half_life))

    def projected(self, choice: HybridChoice, rank: int) -> float:
        ranked = self.on_valid(choice.reg, choice.dropout).truncated(rank)
        return float(self.runner.valid_per_user(self._published_scores(choice, ranked, True)).mean())

    def published(self, choice: HybridChoice, fresh: list[tuple[float, int]]) -> list[np.ndarray]:
        self._content_scores = None  # not needed past the width (recomputed if asked again)
        key = (choice.reg, choice.dropout, choice.half_life, choice.weight, choice.rank, choice.projected)
        if self._base is None or self._base[0] != key:
            model = self.on_valid(choice.reg, choice.dropout).truncated(choice.rank)
            self._base = key, self._published_scores(choice, model, choice.projected)
        base, new = self._base[1], new_items(self.runner.data.pop_valid)
        return [self.runner.valid_per_user(lift(base.copy(), [fw] * len(base), new), new, slots) for fw, slots in fresh]


def collab_rows(runner: "Runner", rep: Representation | None, profile: dict | None = None) -> None:
    """Factorised EASE alone, then (with a representation) the hybrid of its content vectors
    and the best content ``profile`` (strategy, popularity weight...), chosen by the job's tuner
    and grids (``tuning.collab``), and at its full width if the width rule narrowed it."""
    data, grid, seed = runner.data, runner.cfg.tuning.collab, runner.cfg.seed
    content = rep.vectors if rep is not None else None
    models: dict[tuple[float, float], CollabModel] = {}

    def on_valid(reg: float, dropout: float = 0.0) -> CollabModel:
        if (reg, dropout) not in models:
            models[reg, dropout] = collab.fit(data.valid_histories, data.n_items, content, grid.rank, reg, seed,
                                              grid.max_dense_items, dropout)
        return models[reg, dropout]

    def on_test(reg: float, dropout: float = 0.0) -> CollabModel:
        return collab.fit(data.test_histories, data.n_items, content, grid.rank, reg, seed, grid.max_dense_items,
                          dropout)

    # The EASE row is plain EASE (dropout 0): the reference the hybrid is compared with.
    found = search({"reg": grid.reg}, lambda points: [runner.valid_users_scores(
        CollabSystem(COLLAB, "interactions", on_valid(p["reg"]).interactions_only())) for p in points],
        widenings=grid.widenings, section="tuning.collab")
    reg = found.chosen["reg"]
    test_models = {(reg, 0.0): on_test(reg)}
    runner.on_test(CollabSystem(COLLAB, "interactions", test_models[reg, 0.0].interactions_only(),
                                params={"reg": reg, "rank": grid.rank}), found.score, search=found)
    if rep is None:
        return
    c, tuning = tune_hybrid(grid, EvalHybridScorer(runner, rep, profile, on_valid), "tuning.collab")
    hl, chosen = c.query_half_life, (c.reg, c.dropout)
    params = {"reg": c.reg, "dropout": c.dropout, "half_life": hl, "weight": c.weight, "rank": c.rank,
              "projected": c.projected, "fresh_weight": c.fresh_weight, "fresh_slots": c.fresh_slots, **profile}
    full = test_models.get(chosen) or on_test(*chosen)
    test_model = full.truncated(c.rank)
    projection = project(rep.vectors, test_model, c.weight, data.test_histories, seed, hl) if c.projected else None
    runner.on_test(hybrid_row(runner, rep, data.pop_test, profile, test_model, c.weight, projection, params, hl,
                              c.fresh_weight, c.fresh_slots), tuning.grid.score, rep.note, tuning.grid,
                   extra_widened=[w for later in (tuning.fresh, tuning.slots) if later for w in later.widened])
    if c.weight and (c.rank < grid.rank or c.projected):
        # What the width rule cost: the same hybrid at its full width, beside the published one.
        runner.on_test(hybrid_row(runner, rep, data.pop_test, profile, full, c.weight, None,
                                  {**params, "rank": grid.rank, "projected": False}, hl, c.fresh_weight,
                                  c.fresh_slots, name=HYBRID_FULL), None, rep.note)
