"""``groundrec eval``: wire the evaluation together. Reads -> split -> representations ->
systems (tuned on validation) -> test metrics with confidence intervals -> report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from groundrec.offline import catalog as catalog_stage
from groundrec.offline.evaluation import fidelity, metrics, stats
from groundrec.offline.evaluation.representations import (Representation, encode_texts, missing_columns,
                                                          render_texts, templates, tiny_note)
from groundrec.offline.evaluation.splits import EvalUsers, eval_users, split_interactions
from groundrec.offline.evaluation.systems import (ContentSystem, ItemCooccurrence, MostPopular, RandomSystem,
                                                  ScoreFusion, System, fused_vectors)
from groundrec.offline.config import JobConfig, RunConfig
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.shared.tables import read_table

VLM_REPRESENTATIONS = ("vlm_free", "vlm_structured", "vlm_free_title")


@dataclass
class Interactions:
    users: np.ndarray  # user codes
    items: np.ndarray  # catalog rows
    ts: np.ndarray  # seconds
    user_ids: list[str]
    dropped_unknown_items: int


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


def load_interactions(cfg: EvalConfig, item_rows: dict[str, int]) -> Interactions:
    ic = cfg.interactions
    table = read_table(ic.path)
    missing = [c for c in (ic.user_column, ic.item_column, ic.timestamp_column) if c not in table.column_names]
    if missing:
        raise ValueError(f"interactions {ic.path} lack column(s) {missing}; they have {table.column_names}. "
                         "Set interactions.user_column/item_column/timestamp_column in the config")
    ts_col = table.column(ic.timestamp_column)
    if pa.types.is_timestamp(ts_col.type) or pa.types.is_date(ts_col.type):
        ts = pc.cast(pc.cast(ts_col, pa.timestamp("s")), pa.int64())
    elif pa.types.is_integer(ts_col.type) or pa.types.is_floating(ts_col.type):
        ts = pc.cast(ts_col, pa.int64())
    else:
        try:
            ts = pc.cast(pc.cast(pc.cast(ts_col, pa.string()), pa.timestamp("s")), pa.int64())
        except pa.ArrowInvalid as e:
            raise ValueError(f"interactions column {ic.timestamp_column!r} is neither a timestamp, a number of "
                             f"seconds nor an ISO date: {e}") from None
    items = [item_rows.get(i) for i in pc.cast(table.column(ic.item_column), pa.string()).to_pylist()]
    users = pc.cast(table.column(ic.user_column), pa.string()).to_pylist()
    ts_np = np.asarray(ts.to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = [n for n, i in enumerate(items) if i is not None and users[n] is not None]
    user_ids = sorted({users[n] for n in keep})
    code = {u: c for c, u in enumerate(user_ids)}
    return Interactions(np.array([code[users[n]] for n in keep], dtype=np.int64),
                        np.array([items[n] for n in keep], dtype=np.int64), ts_np[keep], user_ids,
                        len(items) - len(keep))


def job_config(cfg: EvalConfig, style: str) -> JobConfig:
    """The offline job's config for grounding (and encoding) with this evaluation's models."""
    assert cfg.out is not None
    return JobConfig(catalog=cfg.catalog, out=cfg.out / ".job", cache_dir=cfg.resolved_cache_dir,
                     prompt=cfg.prompt.model_copy(update={"style": style}), vlm=cfg.vlm,
                     encoder=cfg.encoder.model_copy(update={"template": "{vlm_text}"}),
                     run=RunConfig(runner=cfg.runner, work_dir=cfg.out / ".work"))


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


def _popularity(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    return np.bincount(np.concatenate(histories), minlength=n_items).astype(np.float64) if histories else np.zeros(n_items)


class Evaluation:
    def __init__(self, cfg: EvalConfig, progress: bool = True):
        cfg.require_paths()
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        self.visual_encoded: int | None = None  # images through the vision model (the rest: cache)

    def _time(self, name: str, start: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 2)

    def run(self) -> dict:
        from contextlib import ExitStack

        from groundrec.offline.evaluation.report import write_report
        from groundrec.offline.runners import open_runner

        cfg = self.cfg
        self._read_and_split()
        with ExitStack() as stack:
            self._runner = stack.enter_context(open_runner(cfg.runner, None, self.out / ".work"))
            reps = self._representations()
        t = time.perf_counter()
        self.rows: list[Row] = []
        self.valid_score: dict[str, float] = {}
        self._bar = tqdm(desc="systems", unit="system", disable=not self.progress)
        self._baselines()
        built = {r.name: r for r in reps if r.vectors is not None}
        for name in [r for r in cfg.representations if r in built and not r.startswith("fusion")]:
            self._reference(built[name])
        self._fusions(reps, built)
        best = max((n for n in self.valid_score if n in built), key=self.valid_score.get, default=None)
        if best is not None:
            self._tuned(built[best])
        self._bar.close()
        self._time("systems", t)

        t = time.perf_counter()
        result = self._statistics(self.rows)
        self._time("statistics", t)
        inter, split, test, valid = self.inter, self.split, self.test, self.valid
        result.update({
            "config": cfg.model_dump(mode="json"),
            "protocol": {
                "split": split.description, "split_counts": split.counts(), "seed": cfg.split.seed,
                "interactions_used": int(len(inter.items)), "interactions_unknown_item_dropped": inter.dropped_unknown_items,
                "users": len(inter.user_ids), "test_users": len(test), "valid_users": len(valid),
                "test_users_dropped": test.dropped, "valid_users_dropped": valid.dropped,
                "catalog_items": self.n_items, "ks": cfg.ks, "primary_metric": cfg.primary_metric,
                "bootstrap": cfg.bootstrap, "permutations": self.permutations, "alpha": cfg.alpha,
            },
            "representations": [{"name": r.name, "description": r.description, "status": "not run" if r.not_run else "run",
                                 "reason": r.not_run, "note": r.note, "example": r.example,
                                 "valid_" + cfg.primary_metric: self.valid_score.get(r.name)} for r in reps],
            "best_representation": best,
            "fidelity": self.fidelity_report,
            "visual_images_encoded": self.visual_encoded,
            "timings_s": self.timings,
        })
        write_report(result, self.out)
        return result

    # --- data ------------------------------------------------------------------------
    def _read_and_split(self) -> None:
        cfg = self.cfg
        t = time.perf_counter()
        self.items = catalog_stage.load_catalog(cfg.catalog)
        ids = self.items.column(cfg.catalog.id_column).to_pylist()
        self.n_items = len(ids)
        self.inter = inter = load_interactions(cfg, {iid: r for r, iid in enumerate(ids)})
        self.split = split = split_interactions(inter.users, inter.ts, cfg.split)
        self.valid = eval_users(split, "valid", inter.items, inter.ts)
        self.test = eval_users(split, "test", inter.items, inter.ts)
        if len(self.test) == 0 or len(self.valid) == 0:
            raise ValueError(f"no user left to evaluate (validation {len(self.valid)}, test {len(self.test)}; dropped "
                             f"{self.test.dropped}); users need interactions on at least two distinct days/parts")
        # Popularity and collaborative statistics come from each stage's histories only.
        self.valid_histories = [inter.items[p.train] for p in split.parts.values()]
        self.test_histories = [inter.items[np.concatenate([p.train, p.valid])] for p in split.parts.values()]
        self.pop_valid = _popularity(self.valid_histories, self.n_items)
        self.pop_test = _popularity(self.test_histories, self.n_items)
        self._time("read_and_split", t)

    # --- systems ---------------------------------------------------------------------
    def _on_test(self, system: System, valid_primary: float | None = None, note: str | None = None) -> None:
        per_user, lists = evaluate(system, self.test, self.cfg.ks, self.pop_test, self.n_items)
        self.rows.append(Row(system.name, system.representation, dict(getattr(system, "params", {}) or {}),
                             per_user, lists, valid_primary, note))
        self._bar.update()

    def _on_valid(self, system: System) -> float:
        per_user, _ = evaluate(system, self.valid, self.cfg.ks, self.pop_valid, self.n_items)
        return float(per_user[self.cfg.primary_metric].mean())

    @staticmethod
    def _content(rep: Representation, pop: np.ndarray, name: str = "VLM4Rec (mean + cosine)", **params) -> ContentSystem:
        return ContentSystem(name, rep.name, rep.vectors, pop, params=dict(params), **params)

    def _baselines(self) -> None:
        self._on_test(RandomSystem(self.n_items, self.cfg.seed))
        self._on_test(MostPopular(self.pop_test))
        self._on_test(ItemCooccurrence(self.test_histories, self.n_items))

    def _reference(self, rep: Representation) -> None:
        """The VLM4Rec algorithm (mean profile, cosine) on one representation."""
        self.valid_score[rep.name] = self._on_valid(self._content(rep, self.pop_valid))
        self._on_test(self._content(rep, self.pop_test), self.valid_score[rep.name], rep.note)

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

            scored = {w: self._on_valid(fusion(w, self.pop_valid)) for w in self.cfg.tuning.fusion_text_weight}
            w_best = max(scored, key=scored.get)
            self.valid_score[r.name] = scored[w_best]
            self._on_test(fusion(w_best, self.pop_test), scored[w_best], r.note)

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
            scored = [(self._on_valid(self._content(rep, self.pop_valid, name=label, **p)), -n, p)
                      for n, p in enumerate(grid)]
            score, _, params = max(scored, key=lambda s: (s[0], s[1]))  # ties: the first in the grid
            self._on_test(self._content(rep, self.pop_test, name=label, **params), score, rep.note)

    # --- representations -------------------------------------------------------------
    def _representations(self) -> list[Representation]:
        cfg = self.cfg
        self.fidelity_report: dict = {}
        table = self.items
        tmpl = templates(cfg, table)
        reps: list[Representation] = []
        groundings: dict[str, pa.Table | str] = {}
        for name in tqdm(cfg.representations, desc="representations", unit="rep", disable=not self.progress):
            t = time.perf_counter()
            if name in tmpl:
                template, what = tmpl[name]
                rep = Representation(name, what)
                source = table
                if name in VLM_REPRESENTATIONS:
                    style = "structured" if name == "vlm_structured" else "free"
                    if style not in groundings:
                        groundings[style] = self._ground(style)
                    g = groundings[style]
                    if isinstance(g, str):
                        rep.not_run = g
                        reps.append(rep)
                        continue
                    source = g
                    rep.note = tiny_note(cfg.vlm.model)
                missing = missing_columns(template, source)
                if missing or not template:
                    rep.not_run = f"the catalog has no column(s) {missing or 'for this template'}"
                else:
                    texts = render_texts(template, source)
                    if source is not table:  # groundings cover the items that could be grounded
                        by_id = dict(zip(source.column(cfg.catalog.id_column).to_pylist(), texts))
                        texts = [by_id.get(i, "") for i in table.column(cfg.catalog.id_column).to_pylist()]
                    rep.example = next((x for x in texts if x), None)
                    try:
                        rep.vectors = encode_texts(texts, self._encode)
                    except ValueError as e:
                        rep.not_run = str(e)
            elif name == "visual":
                rep = self._visual()
            else:
                rep = Representation(name, {"fusion_concat": "concatenation of text and visual vectors",
                                            "fusion_mean": "weighted mean of text and visual cosine scores"}[name])
            self._time(f"representation:{name}", t)
            reps.append(rep)
        if isinstance(groundings.get("structured"), pa.Table) and cfg.fidelity:
            g = groundings["structured"]
            self.fidelity_report = {
                "note": tiny_note(cfg.vlm.model),
                "fields": {f: fidelity.field_accuracy(g.column(f"vlm_{f}").to_pylist(), g.column(col).to_pylist(),
                                                      cfg.synonyms)
                           for f, col in cfg.fidelity.items() if f"vlm_{f}" in g.column_names and col in g.column_names},
                "unknown": [f"{f} -> {col}" for f, col in cfg.fidelity.items()
                            if f"vlm_{f}" not in g.column_names or col not in g.column_names],
            }
        return reps

    def _ground(self, style: str) -> pa.Table | str:
        """The job's grounding stage on the whole catalog, or the reason it cannot run here."""
        from groundrec.offline.ground import ground_catalog
        from groundrec.offline.job import StageClock
        from groundrec.offline.skips import Skips
        from groundrec.offline.vlm import VLMUnavailable
        from groundrec.offline.vlm.registry import backend_class

        job = job_config(self.cfg, style)
        try:
            backend_class(job.vlm).check(job.vlm)
        except VLMUnavailable as e:
            return f"VLM not available on this machine: {e}"
        items = catalog_stage.load_catalog(job.catalog)
        g, _ = ground_catalog(self._runner, items, job, Skips(), StageClock(), self.progress)
        return g

    def _encode(self, texts: list[str]) -> np.ndarray:
        from groundrec.offline.encode import encode_cached, resolve_encoder

        job = job_config(self.cfg, "free")
        return encode_cached(self._runner, texts, job, resolve_encoder(job.encoder.model), self.progress)[0]

    def _visual(self) -> Representation:
        from groundrec.offline.evaluation.visual import encode_images
        from groundrec.offline.vlm import VLMUnavailable, resolve_vlm

        cfg = self.cfg
        rep = Representation("visual", f"raw visual features ({cfg.vision_model})")
        try:
            path = resolve_vlm(cfg.vision_model, kind="vision model")
        except VLMUnavailable as e:
            rep.not_run = f"vision model not available on this machine: {e}"
            return rep
        rep.vectors, bad, encoded = encode_images(str(path), self.items, cfg.vision_batch_size, self.progress,
                                                  cfg.resolved_cache_dir)
        self.visual_encoded = encoded
        rep.note = tiny_note(cfg.vision_model)
        if bad:
            rep.note = "; ".join(filter(None, [rep.note, "unreadable images: " + ", ".join(f"{k} ({v})" for k, v in bad.items())]))
        return rep

    # --- statistics ------------------------------------------------------------------
    def _statistics(self, rows: list[Row]) -> dict:
        cfg = self.cfg
        primary = cfg.primary_metric
        for row in rows:
            row.ci = {m: stats.bootstrap_ci(v, cfg.bootstrap, cfg.alpha, cfg.seed) for m, v in row.per_user.items()}
        labels = [f"{r.system} / {r.representation}" for r in rows]
        n_pairs = len(rows) * (len(rows) - 1) // 2
        # The smallest p-value a randomisation test can give is 1/(flips+1); Holm's strictest
        # threshold is alpha/pairs. Enough flips that a real difference can pass it.
        self.permutations = max(cfg.permutations, int(np.ceil(2 * n_pairs / cfg.alpha)))
        pvalues = {(labels[i], labels[j]): stats.paired_test(rows[i].per_user[primary], rows[j].per_user[primary],
                                                             self.permutations, cfg.seed)
                   for i in range(len(rows)) for j in range(i + 1, len(rows))}
        significant = stats.holm(pvalues, cfg.alpha)
        best = max(range(len(rows)), key=lambda i: rows[i].ci[primary][0])
        vs_best = {}
        for i, label in enumerate(labels):
            if i == best:
                continue
            pair = (labels[min(i, best)], labels[max(i, best)])
            vs_best[label] = {"p": pvalues[pair], "significant": significant[pair]}
        return {
            "rows": [{"label": lab, "system": r.system, "representation": r.representation, "params": r.params,
                      "note": r.note, "valid_" + primary: r.valid_primary,
                      "metrics": {m: {"mean": c[0], "ci_low": c[1], "ci_high": c[2]} for m, c in r.ci.items()},
                      "lists": r.lists, "vs_best": vs_best.get(lab)}
                     for lab, r in zip(labels, rows)],
            "best": labels[best],
            "pairwise": [{"a": a, "b": b, "p": p, "significant": significant[(a, b)]} for (a, b), p in pvalues.items()],
        }
