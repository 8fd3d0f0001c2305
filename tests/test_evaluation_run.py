"""`groundrec eval`'s wiring on a small synthetic catalog, one test per module: the data each
stage may see (offline/evaluation/data.py), the text representations
(offline/evaluation/representations.py), the run end to end (offline/evaluation/run.py) and the
report written from a results dict (offline/evaluation/report.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from groundrec.offline.demo import make_demo_data
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.data import read_and_split
from groundrec.offline.evaluation.report import write_report
from groundrec.offline.evaluation.representations import build_representations
from groundrec.offline.evaluation.run import run_evaluation
from groundrec.offline.runners import open_runner
from groundrec.shared.config import load_config


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("eval-run"), n_items=60, n_users=30, seed=3)


def _cfg(demo, out, **sets) -> EvalConfig:
    overrides = {"catalog.path": str(demo["catalog"]), "interactions.path": str(demo["interactions"]),
                 "out": str(out), "split.holdout": "last_n", "bootstrap": 200, "permutations": 500,
                 "representations": ["title"], **sets}
    return load_config(None, overrides, EvalConfig)


def test_each_stage_sees_only_what_precedes_its_hold_out(demo, tmp_path):
    data = read_and_split(_cfg(demo, tmp_path))
    parts = list(data.split.parts.values())
    assert len(data.valid_histories) == len(data.test_histories) == len(parts) > 0
    for part, valid_h, test_h in zip(parts, data.valid_histories, data.test_histories):
        assert valid_h.tolist() == data.inter.items[part.train].tolist()  # validation: the training part
        assert test_h.tolist() == data.inter.items[np.concatenate([part.train, part.valid])].tolist()
        assert not set(part.test.tolist()) & (set(part.train.tolist()) | set(part.valid.tolist()))  # disjoint parts
    for histories, counts in ((data.valid_histories, data.pop_valid), (data.test_histories, data.pop_test)):
        naive = np.zeros(data.n_items)
        for h in histories:
            for row in h:
                naive[row] += 1
        assert np.array_equal(np.asarray(counts, dtype=float), naive)  # popularity from visible parts only
    assert data.pop_test.sum() > data.pop_valid.sum()


def test_the_histories_each_stage_sees_are_in_time_order(demo, tmp_path):
    """SASRec's refit and the recency-weighted queries read a history's order: under the
    cold_items split the training and validation parts interleave in time (the random split's
    parts: tests/test_eval_units.py)."""
    data = read_and_split(_cfg(demo, tmp_path, **{"split.kind": "cold_items"}))
    interleaved = 0
    for part, test_h in zip(data.split.parts.values(), data.test_histories):
        seen = np.concatenate([part.train, part.valid])
        order = seen[np.lexsort((seen, data.inter.ts[seen]))]
        assert test_h.tolist() == data.inter.items[order].tolist()
        interleaved += not np.array_equal(order, seen)
    assert interleaved  # the case the order is for


def test_text_representations_are_unit_vectors_of_their_template(demo, tmp_path):
    cfg = _cfg(demo, tmp_path, representations=["title", "description"],
               templates={"title_colour": "{title}. {colour}"})
    from groundrec.offline.catalog import load_catalog

    items = load_catalog(cfg.catalog)
    with open_runner("local", None, tmp_path / ".work") as runner:
        built = build_representations(cfg, items, runner, progress=False)
    reps = {r.name: r for r in built.reps}
    assert {"title", "description", "title_colour"} <= set(reps)
    first = items.slice(0, 1).to_pylist()[0]
    assert reps["title_colour"].example == f"{first['title']}. {first['colour']}"
    for name in ("title", "description", "title_colour"):
        v = reps[name].vectors
        assert reps[name].not_run is None and v.shape[0] == items.num_rows
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert not np.allclose(reps["title"].vectors, reps["description"].vectors)


def test_run_evaluation_writes_every_number_it_returns(demo, tmp_path):
    out = tmp_path / "report"
    result = run_evaluation(_cfg(demo, out), progress=False)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result, default=float))
    labels = {r["label"] for r in result["rows"]}
    assert {"Random / -", "Most popular / -", "VLM4Rec (mean + cosine) / title"} <= labels
    assert result["best_representation"] == "title" and result["protocol"]["test_users"] > 0
    assert set(result["timings_s"]) >= {"read_and_split", "systems", "statistics"}
    rows = {r["label"]: r for r in result["rows"]}
    title, random_ = rows["VLM4Rec (mean + cosine) / title"], rows["Random / -"]
    assert title["metrics"]["recall@20"]["mean"] > random_["metrics"]["recall@20"]["mean"]  # planted preferences
    for name in ("report.md", "report.html", "primary_metric.png", "recall_at_k.png", "ndcg_at_k.png"):
        assert (out / name).stat().st_size > 0


def _metric(mean: float) -> dict:
    return {"mean": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01}


def _row(system: str, rep: str, mean: float, note=None, vs_best=None) -> dict:
    ks = (5, 10)
    metrics = {f"{m}@{k}": _metric(mean / (2 if m == "mrr" else 1)) for m in ("recall", "ndcg", "hit_rate", "mrr") for k in ks}
    return {"system": system, "representation": rep, "label": f"{system} / {rep}", "params": {"strategy": "mean"},
            "metrics": metrics, "lists": {f"{x}@{k}": 0.5 for x in ("coverage", "arp") for k in ks},
            "vs_best": vs_best, "note": note, "slices": {}}


def test_the_report_is_written_from_a_small_results_dict(tmp_path):
    result = {
        "protocol": {"primary_metric": "recall@10", "alpha": 0.05, "split": "last item per user", "seed": 0,
                     "split_counts": {"train": 80, "valid": 10, "test": 10}, "interactions_used": 100,
                     "interactions_unknown_item_dropped": 2, "users": 10, "test_users": 10, "test_users_dropped": 0,
                     "valid_users": 10, "valid_users_dropped": 0, "catalog_items": 50, "ks": [5, 10],
                     "bootstrap": 100, "permutations": 100},
        "rows": [_row("VLM4Rec (mean + cosine)", "title", 0.4),
                 _row("Random", "-", 0.1, vs_best={"significant": True, "p": 0.001, "p_holm": 0.003}),
                 _row("VLM4Rec (mean + cosine)", "vlm_free", 0.2, note="tiny random-weight VLM",
                      vs_best={"significant": False, "p": 0.3})],
        "pairwise": [{"a": "VLM4Rec (mean + cosine) / title", "b": "Random / -", "p": 0.001, "significant": True},
                     {"a": "VLM4Rec (mean + cosine) / vlm_free", "b": "Random / -", "p": 0.2, "significant": False},
                     {"a": "VLM4Rec (mean + cosine) / vlm_free", "b": "VLM4Rec (mean + cosine) / title", "p": 0.3,
                      "significant": False}],
        "best": "VLM4Rec (mean + cosine) / title",
        "representations": [{"name": "title", "description": "the title", "status": "run", "reason": None,
                             "note": None, "example": "red | striped dress <img src=x onerror=alert(1)>"},
                            {"name": "visual", "description": "image features", "status": "not run",
                             "reason": "no vision weights here", "note": None, "example": None}],
        "timings_s": {"systems": 1.5},
    }
    write_report(result, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == result
    md = (tmp_path / "report.md").read_text()
    assert "| VLM4Rec (mean + cosine) | title | 0.4000 [0.3900, 0.4100]" in md
    assert "| Random | - | 0.1000 [0.0900, 0.1100]" in md and "**yes** (p=0.001, Holm-adjusted 0.003)" in md
    assert "**not run**: no vision weights here" in md and "red / striped dress" in md  # a | would break the table
    verdict = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert "Best content-based system vs best baseline" in verdict and "higher, significant" in verdict
    assert "VLM grounding vs catalog text" in verdict and "tiny random-weight model" in verdict
    html = (tmp_path / "report.html").read_text()
    assert html.count("<table>") == 3 and "<td>VLM4Rec (mean + cosine) / title</td>" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html  # catalog text is text
    for png in ("primary_metric.png", "recall_at_k.png", "ndcg_at_k.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_slices_table_says_it_holds_recall_whatever_the_primary_metric():
    """The slices are recall at the primary metric's k: with ndcg@10 primary the table said
    "ndcg@10 on cold items" over recall figures."""
    from groundrec.offline.evaluation.report import slices_table

    row = {"system": "S", "representation": "r",
           "slices": {"cold items": {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3, "users": 4}}}
    table = slices_table({"protocol": {"primary_metric": "ndcg@10"}, "rows": [row]})
    assert "recall@10 on cold items [users]" in table[0] and "ndcg" not in table[0]
