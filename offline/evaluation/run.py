"""``groundrec eval``: wire the evaluation together. Read and split -> representations ->
systems (tuned on validation) -> test metrics with confidence intervals -> report. Each
step is a function of its own module that returns what the next one takes."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from groundrec.offline.evaluation import stats
from groundrec.offline.evaluation.compare import run_systems
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import read_and_split
from groundrec.offline.evaluation.representations import build_representations


def run_evaluation(cfg: EvalConfig, progress: bool = True) -> dict:
    """Every number of the evaluation (also written as report.md/html, results.json, plots)."""
    from groundrec.offline.evaluation.report import write_report
    from groundrec.offline.runners import open_runner

    cfg.require_paths()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    @contextmanager
    def timed(name: str):
        start = time.perf_counter()
        yield
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 2)

    with timed("read_and_split"):
        data = read_and_split(cfg)
    with open_runner(cfg.runner, None, out / ".work") as runner:
        built = build_representations(cfg, data.items, runner, progress)
    timings.update(built.timings)
    with timed("systems"):
        rows, valid_score, best, reps = run_systems(cfg, data, built.reps, progress)
    with timed("statistics"):
        result = stats.summarise(rows, cfg)
    permutations = result.pop("permutations")
    result.update({
        "config": cfg.model_dump(mode="json"),
        "protocol": {
            "split": data.split.description, "split_counts": data.split.counts(), "seed": cfg.split.seed,
            "interactions_used": int(len(data.inter.items)), "interactions_unknown_item_dropped": data.inter.dropped_unknown_items,
            "users": len(data.inter.user_ids), "test_users": len(data.test), "valid_users": len(data.valid),
            "test_users_dropped": data.test.dropped, "valid_users_dropped": data.valid.dropped,
            "catalog_items": data.n_items, "ks": cfg.ks, "primary_metric": cfg.primary_metric,
            "bootstrap": cfg.bootstrap, "permutations": permutations, "alpha": cfg.alpha,
        },
        "representations": [{"name": r.name, "description": r.description, "status": "not run" if r.not_run else "run",
                             "reason": r.not_run, "note": r.note, "example": r.example,
                             "valid_" + cfg.primary_metric: valid_score.get(r.name)} for r in reps],
        "best_representation": best,
        "diversity_space": next((r.name for r in reps if r.vectors is not None
                                 and r.name not in ("visual", "fusion_concat")), None),
        "fidelity": built.fidelity,
        "visual_images_encoded": built.visual_encoded,
        "timings_s": timings,
    })
    write_report(result, out)
    return result
