"""Running the systems: baselines, VLM4Rec on each representation, fusions, and groundrec's
tuned profiles on the best representation. Every choice is made on validation users; only
the winners are scored on test. Returns the test rows and the validation scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from groundrec.offline.collab import CollabModel
from groundrec.offline.evaluation import metrics
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import EvalData
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.splits import EvalUsers
from groundrec.offline.evaluation.systems import (CollabSystem, ContentSystem, ImplicitALS, ItemCooccurrence,
                                                  MostPopular, RandomSystem, ScoreFusion, System, fused_vectors,
                                                  hybrid_system)
from groundrec.offline.grids import edge_warnings, one_standard_error
from groundrec.offline.learn import narrowest, project
from groundrec.shared.scoring.ranking import top_k_matrix


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
    slices: dict[str, np.ndarray] = field(default_factory=dict)  # "cold items" -> per-user primary metric
    warnings: list[str] = field(default_factory=list)


COLLAB, HYBRID = "EASE factorised (collaborative)", "groundrec hybrid (content + collaborative)"


def item_slices(train_popularity: np.ndarray) -> dict[str, np.ndarray]:
    """Held-out items with no training interaction (what only content can find) and the rest."""
    cold = train_popularity == 0
    return {"cold items": cold, "warm items": ~cold}


def slice_recall(ranked: np.ndarray, relevant: list[set[int]], mask: np.ndarray, k: int) -> np.ndarray:
    """Recall@k over each user's relevant items inside ``mask``; users with none are left out."""
    out = []
    for row, rel in zip(ranked[:, :k], relevant):
        inside = {i for i in rel if mask[i]}
        if inside:
            out.append(len(inside.intersection(row.tolist())) / len(inside))
    return np.array(out, dtype=np.float64)


def ranking(system: System, users: EvalUsers, k: int) -> np.ndarray:
    """Full ranking over the catalog for every user (seen items excluded): the top-k rows."""
    ranked = []
    for start in range(0, len(users), 512):
        stop = start + 512
        scores = system.scores(users.history[start:stop], users.history_ts[start:stop])
        ranked.append(top_k_matrix(scores, k, users.history[start:stop]))
    return np.concatenate(ranked)


def evaluate(system: System, users: EvalUsers, ks: list[int], popularity: np.ndarray,
             n_items: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Full ranking, then per-user and list metrics."""
    ranked_all = ranking(system, users, max(ks))
    return metrics.per_user_metrics(ranked_all, users.relevant, ks), metrics.list_metrics(ranked_all, popularity, n_items, ks)


class _Runner:
    """Scores systems on validation and test; collects the test rows."""

    def __init__(self, cfg: EvalConfig, data: EvalData, progress: bool):
        self.cfg, self.data = cfg, data
        self.rows: list[Row] = []
        self.valid_score: dict[str, float] = {}
        self._bar = tqdm(desc="systems", unit="system", disable=not progress)

    def _on_test(self, system: System, valid_primary: float | None = None, note: str | None = None,
                 warnings: list[str] | None = None) -> None:
        test, ks = self.data.test, self.cfg.ks
        ranked = ranking(system, test, max(ks))
        per_user = metrics.per_user_metrics(ranked, test.relevant, ks)
        lists = metrics.list_metrics(ranked, self.data.pop_test, self.data.n_items, ks)
        k = int(self.cfg.primary_metric.split("@")[1])
        slices = {name: slice_recall(ranked, test.relevant, mask, k) for name, mask in item_slices(self.data.pop_test).items()}
        self.rows.append(Row(system.name, system.representation, dict(getattr(system, "params", {}) or {}),
                             per_user, lists, valid_primary, note, slices=slices, warnings=list(warnings or [])))
        self._bar.update()

    def _valid_per_user(self, scores: np.ndarray) -> np.ndarray:
        """The primary metric of each validation user for a precomputed (users x items) score matrix."""
        users = self.data.valid
        ranked = top_k_matrix(scores, max(self.cfg.ks), users.history)
        return metrics.per_user_metrics(ranked, users.relevant, self.cfg.ks)[self.cfg.primary_metric]

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

    def _library_baselines(self) -> None:
        """Collaborative baselines from a well-kept library, tuned on validation like ours."""
        tuning = self.cfg.tuning
        grid = [{"regularization": r, "alpha": a} for r in tuning.als_regularization for a in tuning.als_alpha]
        scored = [(self._on_valid(ImplicitALS(self.data.valid_histories, self.data.n_items, tuning.collab_rank,
                                              seed=self.cfg.seed, **g)), -i, g) for i, g in enumerate(grid)]
        score, _, best = max(scored, key=lambda s: (s[0], s[1]))
        self._on_test(ImplicitALS(self.data.test_histories, self.data.n_items, tuning.collab_rank, seed=self.cfg.seed,
                                  **best), score, warnings=edge_warnings(grid, best))

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

    def _tuned(self, rep: Representation) -> dict:
        """groundrec's own profiles on the best representation, each grid tuned on validation
        only. Returns the parameters of the best of all."""
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
            self._on_test(self._content(rep, self.data.pop_test, name=label, **params), score, rep.note,
                          edge_warnings(grid, params))
        return params  # the last grid: best of all

    def _collab(self, rep: Representation | None, profile: dict | None = None) -> None:
        """Factorised EASE alone, and the hybrid with the best representation's content vectors
        and the best content profile (``profile``: strategy, popularity weight...).
        Each is fitted on validation's training part to choose its parameters, then refitted
        on test's training part (training + validation interactions): no test interaction is
        ever seen."""
        from groundrec.offline import collab

        tuning, n, seed = self.cfg.tuning, self.data.n_items, self.cfg.seed
        content = rep.vectors if rep is not None else None

        def fitted(histories: list[np.ndarray]):
            return lambda reg: collab.fit(histories, n, content, tuning.collab_rank, reg, seed, tuning.collab_max_dense_items)

        on_valid, on_test = fitted(self.data.valid_histories), fitted(self.data.test_histories)
        models = {r: on_valid(r) for r in tuning.collab_reg}
        grid = [{"reg": r} for r in tuning.collab_reg]
        scored = [(self._on_valid(CollabSystem(COLLAB, "interactions", models[g["reg"]].interactions_only())), -i, g)
                  for i, g in enumerate(grid)]
        score, _, best = max(scored, key=lambda s: (s[0], s[1]))
        params = {**best, "rank": tuning.collab_rank}
        test_models = {best["reg"]: on_test(best["reg"])}
        self._on_test(CollabSystem(COLLAB, "interactions", test_models[best["reg"]].interactions_only(), params=params),
                      score, warnings=edge_warnings(grid, best))
        if rep is None:
            return
        grid = [{"reg": r, "weight": w} for r in tuning.collab_reg for w in tuning.collab_weight]
        valid = self.data.valid
        # The content scores are the same for every (reg, weight): computed once, then blended.
        content_scores = self._content(rep, self.data.pop_valid, **profile).scores(valid.history, valid.history_ts)
        cf_scores = {r: CollabSystem(HYBRID, rep.name, models[r]).scores(valid.history, valid.history_ts)
                     for r in tuning.collab_reg}
        per_user = {i: self._valid_per_user(content_scores + g["weight"] * cf_scores[g["reg"]])
                    for i, g in enumerate(grid)}
        del content_scores, cf_scores
        # As the job's learn stage chooses: the smallest weight within one standard error of the best,
        pick = one_standard_error(per_user, sorted(per_user, key=lambda i: (grid[i]["weight"], -per_user[i].mean(), i)))
        score, best = float(per_user[pick].mean()), grid[pick]
        rank, projected = self._narrowed(rep, profile, models[best["reg"]], best["weight"], score)
        params = {**best, "rank": rank, "projected": projected, **profile}
        test_model = (test_models.get(best["reg"]) or on_test(best["reg"])).truncated(rank)
        projection = project(rep.vectors, test_model, best["weight"], self.data.test_histories, seed) if projected else None
        self._on_test(self._hybrid(rep, self.data.pop_test, profile, test_model, best["weight"], projection, params),
                      score, rep.note, edge_warnings(grid, best))

    def _narrowed(self, rep: Representation, profile: dict, model, weight: float, score: float) -> tuple[int, bool]:
        """... then the narrowest rank, then the content's width, each kept only within
        ``collab_rank_tolerance`` of the full rank's validation score (weight 0 is content
        alone): the job's rule (``learn.narrowest``), scored with eval's tuned content profile."""
        tuning, valid = self.cfg.tuning, self.data.valid
        if not weight:
            return model.query.shape[1], False
        content_scores = self._content(rep, self.data.pop_valid, **profile).scores(valid.history, valid.history_ts)

        def score_at(r: int) -> float:
            cf = CollabSystem(HYBRID, rep.name, model.truncated(r)).scores(valid.history, valid.history_ts)
            return float(self._valid_per_user(content_scores + weight * cf).mean())

        def projected_score(r: int) -> float:
            ranked = model.truncated(r)
            system = self._hybrid(rep, self.data.pop_valid, profile, ranked, weight,
                                  project(rep.vectors, ranked, weight, self.data.valid_histories, self.cfg.seed))
            return float(self._valid_per_user(system.scores(valid.history, valid.history_ts)).mean())

        rank, projected, _ = narrowest(model.query.shape[1], score, tuning.collab_rank_tolerance, score_at,
                                       projected_score if tuning.collab_project else None)
        return rank, projected

    def _hybrid(self, rep: Representation, pop: np.ndarray, profile: dict, model: CollabModel, weight: float,
                projection=None, params: dict | None = None) -> CollabSystem:
        return hybrid_system(HYBRID, f"{rep.name} + interactions", self._content(rep, pop, **profile), model, weight,
                             projection, params)


def run_systems(cfg: EvalConfig, data: EvalData, reps: list[Representation],
                progress: bool) -> tuple[list[Row], dict[str, float], str | None]:
    """The test rows, the validation score of each representation, and the best one."""
    r = _Runner(cfg, data, progress)
    r._baselines()
    r._library_baselines()
    built = {rep.name: rep for rep in reps if rep.vectors is not None}
    for name in [n for n in cfg.representation_names if n in built and not n.startswith("fusion")]:
        r._reference(built[name])
    r._fusions(reps, built)
    best = max((n for n in r.valid_score if n in built), key=r.valid_score.get, default=None)
    profile = r._tuned(built[best]) if best is not None else None
    r._collab(built.get(best) if best is not None else None, profile)
    r._bar.close()
    return r.rows, r.valid_score, best
