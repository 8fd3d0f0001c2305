"""Running the systems: baselines, VLM4Rec on each representation, fusions, and groundrec's
tuned profiles on the best representation. Every choice is made on validation users; only
the winners are scored on test. Returns the test rows and the validation scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from groundrec.offline.evaluation import metrics
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import EvalData
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.splits import EvalUsers
from groundrec.offline.evaluation.systems import (ContentSystem, ItemCooccurrence, MostPopular, RandomSystem,
                                                  ScoreFusion, System, fused_vectors)


@dataclass
class Row:
    """One system's results on the test users."""

    system: str
    representation: str
    params: dict
    per_user: dict[str, np.ndarray]
    lists: dict[str, float]
    valid_primary: float | None = None
    note: str | None = None
    ci: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def evaluate(system: System, users: EvalUsers, ks: list[int], popularity: np.ndarray,
             n_items: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Full ranking over the catalog for every user (seen items excluded), then metrics."""
    ranked = []
    for start in range(0, len(users), 512):
        stop = start + 512
        scores = system.scores(users.history[start:stop], users.history_ts[start:stop])
        ranked.append(metrics.top_k(scores, max(ks), exclude=users.history[start:stop]))
    ranked_all = np.concatenate(ranked)
    return metrics.per_user_metrics(ranked_all, users.relevant, ks), metrics.list_metrics(ranked_all, popularity, n_items, ks)


class _Runner:
    """Scores systems on validation and test; collects the test rows."""

    def __init__(self, cfg: EvalConfig, data: EvalData, progress: bool):
        self.cfg, self.data = cfg, data
        self.rows: list[Row] = []
        self.valid_score: dict[str, float] = {}
        self._bar = tqdm(desc="systems", unit="system", disable=not progress)

    def _on_test(self, system: System, valid_primary: float | None = None, note: str | None = None) -> None:
        per_user, lists = evaluate(system, self.data.test, self.cfg.ks, self.data.pop_test, self.data.n_items)
        self.rows.append(Row(system.name, system.representation, dict(getattr(system, "params", {}) or {}),
                             per_user, lists, valid_primary, note))
        self._bar.update()

    def _on_valid(self, system: System) -> float:
        per_user, _ = evaluate(system, self.data.valid, self.cfg.ks, self.data.pop_valid, self.data.n_items)
        return float(per_user[self.cfg.primary_metric].mean())

    @staticmethod
    def _content(rep: Representation, pop: np.ndarray, name: str = "VLM4Rec (mean + cosine)", **params) -> ContentSystem:
        return ContentSystem(name, rep.name, rep.vectors, pop, params=dict(params), **params)

    def _baselines(self) -> None:
        self._on_test(RandomSystem(self.data.n_items, self.cfg.seed))
        self._on_test(MostPopular(self.data.pop_test))
        self._on_test(ItemCooccurrence(self.data.test_histories, self.data.n_items))

    def _reference(self, rep: Representation) -> None:
        """The VLM4Rec algorithm (mean profile, cosine) on one representation."""
        self.valid_score[rep.name] = self._on_valid(self._content(rep, self.data.pop_valid))
        self._on_test(self._content(rep, self.data.pop_test), self.valid_score[rep.name], rep.note)

    def _fusions(self, reps: list[Representation], built: dict[str, Representation]) -> None:
        """Fusion of the best text representation (on validation) with the visual one."""
        text_scores = {n: s for n, s in self.valid_score.items() if n != "visual"}
        best_text = max(text_scores, key=text_scores.get) if text_scores else None
        for r in reps:
            if not r.name.startswith("fusion"):
                continue
            if best_text is None or "visual" not in built:
                r.not_run = r.not_run or ("needs a text representation and the visual one; "
                                          f"missing: {'visual' if best_text else 'text'}")
                continue
            text, visual = built[best_text], built["visual"]
            r.note = "; ".join(n for n in (text.note, visual.note) if n) or None
            r.description = f"{r.description} ({best_text} + visual)"
            if r.name == "fusion_concat":
                r.vectors = fused_vectors(text.vectors, visual.vectors)
                built[r.name] = r
                self._reference(r)
                continue

            def fusion(w: float, pop: np.ndarray) -> ScoreFusion:
                return ScoreFusion("VLM4Rec (mean + cosine)", f"fusion_mean ({best_text} + visual)",
                                   self._content(text, pop), self._content(visual, pop), w, params={"text_weight": w})

            scored = {w: self._on_valid(fusion(w, self.data.pop_valid)) for w in self.cfg.tuning.fusion_text_weight}
            w_best = max(scored, key=scored.get)
            self.valid_score[r.name] = scored[w_best]
            self._on_test(fusion(w_best, self.data.pop_test), scored[w_best], r.note)

    def _tuned(self, rep: Representation) -> None:
        """groundrec's own profiles on the best representation, each grid tuned on validation only."""
        tuning = self.cfg.tuning
        grids = {
            "groundrec recency": [dict(strategy="recency", half_life_days=h) for h in tuning.half_life_days],
            "groundrec multi-interest": [dict(strategy="multi_interest", n_interests=n) for n in tuning.n_interests],
            "groundrec mean + popularity": [dict(strategy="mean", popularity_weight=w)
                                            for w in tuning.popularity_weight if w > 0],
        }
        profiles = grids["groundrec recency"] + grids["groundrec multi-interest"] + [dict(strategy="mean")]
        grids["groundrec best of all (tuned)"] = [{**p, "popularity_weight": w}
                                                  for p in profiles for w in tuning.popularity_weight]
        for label, grid in grids.items():
            if not grid:
                continue
            scored = [(self._on_valid(self._content(rep, self.data.pop_valid, name=label, **p)), -n, p)
                      for n, p in enumerate(grid)]
            score, _, params = max(scored, key=lambda s: (s[0], s[1]))  # ties: the first in the grid
            self._on_test(self._content(rep, self.data.pop_test, name=label, **params), score, rep.note)



def run_systems(cfg: EvalConfig, data: EvalData, reps: list[Representation],
                progress: bool) -> tuple[list[Row], dict[str, float], str | None]:
    """The test rows, the validation score of each representation, and the best one."""
    r = _Runner(cfg, data, progress)
    r._baselines()
    built = {rep.name: rep for rep in reps if rep.vectors is not None}
    for name in [n for n in cfg.representations if n in built and not n.startswith("fusion")]:
        r._reference(built[name])
    r._fusions(reps, built)
    best = max((n for n in r.valid_score if n in built), key=r.valid_score.get, default=None)
    if best is not None:
        r._tuned(built[best])
    r._bar.close()
    return r.rows, r.valid_score, best
