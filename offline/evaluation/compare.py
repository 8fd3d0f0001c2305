"""Running the systems: baselines, VLM4Rec on each representation, fusions, and groundrec's
tuned profiles on the best representation. Every choice is made on validation users; only
the winners are scored on test. Returns the test rows and the validation scores."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from groundrec.offline.evaluation import metrics
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import EvalData
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.splits import EvalUsers
from groundrec.offline.evaluation.hybrid import collab_rows
from groundrec.offline.evaluation.systems import (ContentSystem, ImplicitALS, ItemCooccurrence, MostPopular,
                                                  RandomSystem, ScoreFusion, System, fused_vectors)
from groundrec.offline.selection import Search, search
from groundrec.shared.scoring.searcher import Searcher


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
    slices: dict[str, np.ndarray] = field(default_factory=dict)  # "cold items" -> per-user recall at the primary's k
    warnings: list[str] = field(default_factory=list)
    widened: list[dict] = field(default_factory=list)  # grid values added beyond an edge while tuning
    width: list[dict] = field(default_factory=list)  # a hybrid: each width tried on validation (width_rule.narrowest)
    width_folds: list[dict] = field(default_factory=list)  # ... the rule on one half of validation, checked on the other


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


def ranking(system: System, users: EvalUsers, ks: list[int]) -> dict[int, np.ndarray]:
    """Full ranking over the catalog for every user (seen items excluded): the top-k rows for
    each k. One list cut at each k, unless the system's list of k is not the first k of a
    longer one (places kept for new items: a list of 20 holds them in its top 20): then each
    k is ranked on its own, from the same scores, as the service answers a request for k."""
    cuts = sorted(set(ks)) if not system.prefix_consistent else [max(ks)]
    ranked: dict[int, list] = {k: [] for k in cuts}
    for start in range(0, len(users), 512):
        stop = start + 512
        scores = system.scores(users.history[start:stop], users.history_ts[start:stop])
        for k in cuts:
            ranked[k].append(system.top(scores, k, users.history[start:stop]))
    lists = {k: np.concatenate(v) for k, v in ranked.items()}
    return {k: lists[k if k in lists else max(ks)] for k in ks}


def measured(lists: dict[int, np.ndarray], relevant: list[set[int]], popularity: np.ndarray, n_items: int,
             space: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-user and list metrics at each k, each from the list ranked for that k."""
    per_user, lists_out = {}, {}
    for k, ranked in lists.items():
        per_user.update(metrics.per_user_metrics(ranked, relevant, [k]))
        lists_out.update(metrics.list_metrics(ranked, popularity, n_items, [k], space))
    return per_user, lists_out


def evaluate(system: System, users: EvalUsers, ks: list[int], popularity: np.ndarray,
             n_items: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Full ranking, then per-user and list metrics."""
    return measured(ranking(system, users, ks), users.relevant, popularity, n_items)


class Runner:
    """Scores systems on validation and test; collects the test rows."""

    def __init__(self, cfg: EvalConfig, data: EvalData, progress: bool):
        self.cfg, self.data = cfg, data
        self.rows: list[Row] = []
        self.valid_score: dict[str, float] = {}
        self.space: np.ndarray | None = None  # unit item vectors in which list diversity is measured
        self._bar = tqdm(desc="systems", unit="system", disable=not progress)

    def on_test(self, system: System, valid_primary: float | None = None, note: str | None = None,
                search: Search | None = None, extra_widened: list[dict] = (), width: list[dict] = (),
                width_folds: list[dict] = ()) -> None:
        test, ks = self.data.test, self.cfg.ks
        lists_by_k = ranking(system, test, ks)
        per_user, lists = measured(lists_by_k, test.relevant, self.data.pop_test, self.data.n_items, self.space)
        k = int(self.cfg.primary_metric.split("@")[1])
        slices = {name: slice_recall(lists_by_k[k], test.relevant, mask, k)
                  for name, mask in item_slices(self.data.pop_test).items()}
        self.rows.append(Row(system.name, system.representation, dict(getattr(system, "params", {}) or {}),
                             per_user, lists, valid_primary, note, slices=slices,
                             warnings=list(search.warnings) if search else [],
                             widened=(list(search.widened) if search else []) + list(extra_widened),
                             width=list(width), width_folds=list(width_folds)))
        self._bar.update()

    def valid_per_user(self, scores: np.ndarray, new_rows: np.ndarray | None = None, slots: int = 0,
                       no_profile: list[int] = ()) -> np.ndarray:
        """The primary metric of each validation user for a precomputed (users x items) score
        matrix (with ``slots`` of each list kept for ``new_rows``); the users ``no_profile``
        (nothing in their history to rank by) get the popular fallback, as on test (``System.top``)."""
        users, k = self.data.valid, int(self.cfg.primary_metric.split("@")[1])
        ranked = Searcher(scores.shape[1], new_rows, counts=self.data.pop_valid).top_matrix(
            scores, k, users.history, slots, no_profile)
        return metrics.per_user_metrics(ranked, users.relevant, [k])[self.cfg.primary_metric]

    def valid_users_scores(self, system: System) -> np.ndarray:
        """The primary metric of each validation user for ``system``."""
        per_user, _ = evaluate(system, self.data.valid, self.cfg.ks, self.data.pop_valid, self.data.n_items)
        return per_user[self.cfg.primary_metric]

    def _on_valid(self, system: System) -> float:
        return float(self.valid_users_scores(system).mean())

    @staticmethod
    def content(rep: Representation, pop: np.ndarray, name: str = "VLM4Rec (mean + cosine)", **params) -> ContentSystem:
        return ContentSystem(name, rep.name, rep.vectors, pop, params=dict(params), **params)

    def _baselines(self) -> None:
        self.on_test(RandomSystem(self.data.n_items, self.cfg.seed))
        self.on_test(MostPopular(self.data.pop_test))
        self.on_test(ItemCooccurrence(self.data.test_histories, self.data.n_items))

    def _search(self, axes: dict[str, list], system_at, **rules) -> Search:
        """The one selection procedure (``offline.selection.search``) over ``system_at(point)``'s
        validation scores, with this evaluation's widening budget."""
        return search(axes, lambda points: [self.valid_users_scores(system_at(p)) for p in points],
                      widenings=self.cfg.tuning.widenings, **rules)

    def _library_baselines(self) -> None:
        """Collaborative baselines from a well-kept library, tuned on validation like ours."""
        tuning, rank = self.cfg.tuning, self.cfg.tuning.collab.rank

        def als(histories: list[np.ndarray], point: dict) -> ImplicitALS:
            return ImplicitALS(histories, self.data.n_items, rank, seed=self.cfg.seed, **point)

        found = self._search({"regularization": tuning.als_regularization, "alpha": tuning.als_alpha},
                             lambda p: als(self.data.valid_histories, p))
        self.on_test(als(self.data.test_histories, found.chosen), found.score, search=found)

    def _sasrec(self) -> None:
        """SASRec as published (``evaluation.sasrec``): its dropout (the paper's two) and epochs
        chosen on validation, then retrained for that many epochs on every user's training and
        validation parts."""
        from groundrec.offline.evaluation.sasrec import SASRecSettings, SASRecSystem, train_sasrec

        data, runs = self.data, {}
        valid = (list(data.valid.history), list(data.valid.relevant))

        def trained(point: dict) -> np.ndarray:
            s = SASRecSettings(seed=self.cfg.seed, max_steps=self.cfg.sasrec_max_steps, **point)
            runs[point["dropout"]] = (s, train_sasrec(data.valid_histories, data.n_items, s, valid)[1])
            return runs[point["dropout"]][1]["valid_per_user"]

        found = search({"dropout": [0.2, 0.5]}, lambda points: [trained(p) for p in points])
        s, chosen = runs[found.chosen["dropout"]]
        model, refit = train_sasrec(data.test_histories, data.n_items, s, epochs=chosen["best_epoch"])
        params = {**{k: chosen[k] for k in ("dim", "blocks", "max_len", "dropout", "best_epoch", "steps")},
                  "seconds": round(sum(r["seconds"] for _, r in runs.values()) + refit["seconds"], 1)}
        self.on_test(SASRecSystem(model, params), found.score, search=found)

    def _reference(self, rep: Representation) -> None:
        """The VLM4Rec algorithm (mean profile, cosine) on one representation."""
        self.valid_score[rep.name] = self._on_valid(self.content(rep, self.data.pop_valid))
        self.on_test(self.content(rep, self.data.pop_test), self.valid_score[rep.name], rep.note)

    def _fusions(self, reps: list[Representation], built: dict[str, Representation]) -> list[Representation]:
        """Fusion of the best text representation (on validation) with the visual one. Returns
        ``reps`` with each fusion as it was run (its vectors, note and description) or the
        reason it was not; the inputs are left as they were."""
        text_scores = {n: s for n, s in self.valid_score.items() if n != "visual"}
        best_text = max(text_scores, key=text_scores.get) if text_scores else None
        out = []
        for r in reps:
            if not r.name.startswith("fusion"):
                out.append(r)
                continue
            if best_text is None or "visual" not in built:
                out.append(replace(r, not_run=r.not_run or ("needs a text representation and the visual one; "
                                                            f"missing: {'visual' if best_text else 'text'}")))
                continue
            text, visual = built[best_text], built["visual"]
            r = replace(r, note="; ".join(n for n in (text.note, visual.note) if n) or None,
                        description=f"{r.description} ({best_text} + visual)")
            if r.name == "fusion_concat":
                r = replace(r, vectors=fused_vectors(text.vectors, visual.vectors))
                self._reference(r)
                out.append(r)
                continue

            def fusion(w: float, pop: np.ndarray) -> ScoreFusion:
                return ScoreFusion("VLM4Rec (mean + cosine)", f"fusion_mean ({best_text} + visual)",
                                   self.content(text, pop), self.content(visual, pop), w, params={"text_weight": w})

            found = self._search({"text_weight": self.cfg.tuning.fusion_text_weight},
                                 lambda p: fusion(p["text_weight"], self.data.pop_valid), limits={"text_weight": (0, 1)})
            self.valid_score[r.name] = found.score
            self.on_test(fusion(found.chosen["text_weight"], self.data.pop_test), found.score, r.note, found)
            out.append(r)
        return out

    def _tuned(self, rep: Representation) -> dict:
        """groundrec's own profiles on the best representation, each grid tuned on validation
        only. Returns the parameters of the best of all."""
        tuning, valid_pop, test_pop = self.cfg.tuning, self.data.pop_valid, self.data.pop_test

        def tuned(label: str, axes: dict[str, list], fixed: dict, **rules) -> Search:
            found = self._search(axes, lambda p: self.content(rep, valid_pop, name=label, **fixed, **p), **rules)
            self.on_test(self.content(rep, test_pop, name=label, **fixed, **found.chosen), found.score, rep.note,
                         found)
            return found

        recency = tuned("groundrec recency", {"half_life_days": tuning.half_life_days}, {"strategy": "recency"})
        interests = tuned("groundrec multi-interest", {"n_interests": tuning.n_interests},
                          {"strategy": "multi_interest"}, limits={"n_interests": (0, 17)})
        weights = [w for w in tuning.popularity_weight if w > 0]
        if weights:
            tuned("groundrec mean + popularity", {"popularity_weight": weights}, {"strategy": "mean"})
        # Best of all: every profile the searches above tried (widenings included), with each
        # popularity weight; the profile axis is categorical, the popularity weight widens.
        profiles = ([{"strategy": "recency", "half_life_days": h} for h in recency.axes["half_life_days"]]
                    + [{"strategy": "multi_interest", "n_interests": n} for n in interests.axes["n_interests"]]
                    + [{"strategy": "mean"}])
        best = self._search({"profile": list(range(len(profiles))), "popularity_weight": tuning.popularity_weight},
                            lambda p: self.content(rep, valid_pop, name="groundrec best of all (tuned)",
                                                   **profiles[p["profile"]], popularity_weight=p["popularity_weight"]),
                            relevant=lambda p: {"popularity_weight": p["popularity_weight"]})
        params = {**profiles[best.chosen["profile"]], "popularity_weight": best.chosen["popularity_weight"]}
        self.on_test(self.content(rep, test_pop, name="groundrec best of all (tuned)", **params), best.score,
                     rep.note, best)
        return params


def run_systems(cfg: EvalConfig, data: EvalData, reps: list[Representation],
                progress: bool) -> tuple[list[Row], dict[str, float], str | None, list[Representation]]:
    """The test rows, the validation score of each representation, the best one, and the
    representations as run (fusions built from the best text one)."""
    r = Runner(cfg, data, progress)
    # Every row's diversity@K is measured in one space: the first text representation built
    # (the same yardstick for all rows, whatever each one ranks with).
    text = [rep for rep in reps if rep.vectors is not None and rep.name not in ("visual", "fusion_concat")]
    r.space = text[0].vectors if text else None
    r._baselines()
    r._library_baselines()
    if cfg.sasrec_row:
        r._sasrec()
    built = {rep.name: rep for rep in reps if rep.vectors is not None}
    for name in [n for n in cfg.representation_names if n in built and not n.startswith("fusion")]:
        r._reference(built[name])
    reps = r._fusions(reps, built)
    built = {rep.name: rep for rep in reps if rep.vectors is not None}
    best = max((n for n in r.valid_score if n in built), key=r.valid_score.get, default=None)
    profile = r._tuned(built[best]) if best is not None else None
    collab_rows(r, built.get(best) if best is not None else None, profile)
    r._bar.close()
    return r.rows, r.valid_score, best, reps
