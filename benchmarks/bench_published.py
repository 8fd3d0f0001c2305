"""Where the published hybrid loses (issue 34): what the job would publish from ``groundrec
eval``'s training data (its ``groundrec published`` row: the job's learn stage, served with a
request's defaults), scored on eval's test users, then with one part of its choice undone at a
time: the place kept for new items, the freshness lift, the projection, the rank, the content
weight, the query's half-life, the fit's decay by age, the version's recent prior; for a
content-only version, its recent prior and the content profile's recency (the mean instead).
Recall@20 with 95% bootstrap intervals and the paired sign-flip p against the published
version, on the test users (nothing here chooses anything: the choices are the job's, on its
own validation; ``--decay-days`` adds choices validation did not make).

Usage (from the repository root; the data is only read; caches go to --out):
  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_published.py --catalog CATALOG --interactions INTERACTIONS
      [--out /tmp/bench_published] [--set key=value ...]   (eval config overrides, as groundrec eval --set)
      [--valid-items N]   (the job's collab.valid_items: the few-user validation's budget)
      [--valid-users N]   (the job's collab.valid_users: the most users holding out a block)
      [--compare OTHER_OUT]   (paired p of this run's published version against another run's, on the same split)
      [--decay-days 30,90]   (the hybrid refitted with its interactions decayed by age, each half-life a variant)
Each run keeps its published version's per-user recall in --out (``published_recall.npy``).
Defaults: ``representations=[title]``, ``split.holdout=last_frac``. A dense synthetic catalog of the shape
issue 34 names (10,000 items, 400 users with long histories): ``python -m
groundrec.offline.dev.dense_catalog OUT --items 10000 --users 400 --per-user 250 --seed 3``.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from groundrec.offline.config import CollabConfig, load_config
from groundrec.offline.evaluation.compare import evaluate
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import read_and_split
from groundrec.offline.evaluation.published import training_interactions
from groundrec.offline.evaluation.representations import build_representations
from groundrec.offline.evaluation.stats import bootstrap_ci, paired_test
from groundrec.offline.evaluation.systems import hybrid_system, version_content
from groundrec.offline.learn import fit_chosen, histories_in_time_order, in_window, learn
from groundrec.offline.projection import project
from groundrec.offline.runners import open_runner
from groundrec.shared.scoring.searcher import Searcher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", required=True)
    p.add_argument("--interactions", required=True)
    p.add_argument("--out", default="/tmp/bench_published", help="caches (never inside the repository)")
    p.add_argument("--set", action="append", help="an eval config override, as groundrec eval --set")
    p.add_argument("--valid-items", type=int, help="the job's collab.valid_items (default: the job's default)")
    p.add_argument("--valid-users", type=int, help="the job's collab.valid_users (default: the job's default)")
    p.add_argument("--compare", help="another run's --out: its published version against this run's, paired")
    p.add_argument("--decay-days", default="", help="comma-separated half-lives in days: a hybrid's published "
                   "choice refitted with its interactions decayed by age (collab.train_half_life_days), each a "
                   "variant (what validation would have had to choose)")
    args = p.parse_args()
    overrides = {"catalog.path": args.catalog, "interactions.path": args.interactions, "out": args.out,
                 "representations": ["title"], "split.holdout": "last_frac"}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    cfg = load_config(None, overrides, EvalConfig)
    data = read_and_split(cfg)
    with open_runner("local", None, Path(args.out) / ".work") as job_runner:
        rep = next(r for r in build_representations(cfg, data.items, job_runner, False).reps if r.name == "title")
    job = {"valid_items": args.valid_items, "valid_users": args.valid_users}
    grid = CollabConfig(**cfg.tuning.collab.model_dump(), **{k: v for k, v in job.items() if v is not None})
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    inter = training_interactions(data)
    learned = learn(inter, rep.vectors, grid, cfg.seed)
    c, report = learned.choice, learned.report
    print(f"the job's learn stage: {time.perf_counter() - started:.1f} s; the process's peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB ({before / 1e6:.2f} GB before the learn "
          f"stage); validation {report.validation_users} users, {report.validation_items} items; chosen {c}")
    decay = report.tuning.decay if report.tuning is not None else None
    if decay is not None:  # collab.train_half_life_days: the validation's verdict
        r = decay.rule
        print(f"the fit's decay by age, on the validation users ({r['users']} users): best {r['best']}, "
              f"{r['diff']:+.4f} (standard error {r['se']:.4f}) against none: {'kept' if r['wins'] else 'not kept'}")
    histories, times = histories_in_time_order(in_window(inter, grid.window_days), with_times=True) if c.hybrid else (
        None, None)

    def scored(choice, projected: bool):
        prior = Searcher.recent_prior_of(choice.recent_weight, learned.recent)  # the version's own, as it serves it
        content = version_content("published", rep.name, rep.vectors, data.pop_test, prior,  # a request's defaults
                                  choice.profile_half_life_days)
        if not choice.hybrid:
            return evaluate(content, data.test, [20], data.pop_test, data.n_items)[0]["recall@20"]
        model = fit_chosen(histories, data.n_items, rep.vectors, grid, choice, cfg.seed, times)
        hl = choice.query_half_life
        projection = project(rep.vectors, model, choice.weight, histories, cfg.seed, hl) if projected else None
        system = hybrid_system("x", "x", content, model, choice.weight, projection, {}, hl, choice.fresh_weight,
                               choice.fresh_slots)
        return evaluate(system, data.test, [20], data.pop_test, data.n_items)[0]["recall@20"]

    variants = {"published (content alone)": (c, False)}
    if c.hybrid:
        variants = {"published": (c, c.projected),
                    "no kept place": (replace(c, fresh_slots=0), c.projected),
                    "no freshness lift, no kept place": (replace(c, fresh_weight=0.0, fresh_slots=0), c.projected),
                    "not projected": (c, False),
                    "full rank, not projected, no lift or place": (replace(c, full_rank=True, fresh_weight=0.0,
                                                                           fresh_slots=0), False),
                    "half-life 0": (replace(c, half_life=0.0), c.projected)}
        for days in (float(d) for d in args.decay_days.split(",") if d.strip()):
            if days != c.train_half_life_days:
                variants[f"the fit decayed by age, {days:g} days"] = (replace(c, train_half_life_days=days), c.projected)
        if c.train_half_life_days:  # at the weight the grid chose before the decay (it may have moved it)
            grid_weight = float(report.tuning.grid.chosen["weight"])
            variants["no decay in the fit"] = (replace(c, train_half_life_days=0.0, weight=grid_weight),
                                               c.projected)
    if c.profile_half_life_days:
        variants["the mean profile"] = (replace(c, profile_half_life_days=0.0), False)
    if c.recent_weight:
        variants["no recent prior"] = (replace(c, recent_weight=0.0), c.projected)
    for weight in sorted({c.weight * 3, c.weight * 10, c.weight / 3} - {c.weight}) if c.hybrid else ():
        variants[f"weight {weight:g}"] = (replace(c, weight=weight), c.projected)
    base = None
    print(f"\n{len(data.test)} test users, recall@20 [95% CI], paired p against the published version\n")
    print("| variant | recall@20 [95% CI] | vs published | p |\n|---|---|---|---|")
    for name, (choice, projected) in variants.items():
        recall = scored(choice, projected)
        mean, low, high = bootstrap_ci(recall, cfg.bootstrap, cfg.alpha, cfg.seed)
        if base is None:
            base = recall
            np.save(Path(args.out) / "published_recall.npy", recall)
            if args.compare:
                other = np.load(Path(args.compare) / "published_recall.npy")
                print(f"| (the other run's published version, {args.compare}) | {other.mean():.4f} | "
                      f"{other.mean() - base.mean():+.4f} | {paired_test(other, base, cfg.permutations, cfg.seed):.3g} |")
        p_value = paired_test(recall, base, cfg.permutations, cfg.seed) if recall is not base else 1.0
        print(f"| {name} | {mean:.4f} [{low:.4f}, {high:.4f}] | {recall.mean() - base.mean():+.4f} | {p_value:.3g} |")


if __name__ == "__main__":
    main()
