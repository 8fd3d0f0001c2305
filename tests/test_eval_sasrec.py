"""SASRec as published, eval's reference for the learned encoder (offline/evaluation/sasrec.py):
it learns a planted order from item ids alone, is seeded, refits for a given number of epochs,
and is a row of `groundrec eval` with its comparisons when asked for."""

import json

import numpy as np
import pytest

import torch  # noqa: E402  (installed by make install: a missing one fails, never skips)

from groundrec.offline.evaluation.report import verdict  # noqa: E402
from groundrec.offline.evaluation.sasrec import SASREC, SASRecSettings, SASRecSystem, train_sasrec  # noqa: E402
from groundrec.offline.sequence.train import recall_at  # noqa: E402
from groundrec.shared.errors import UserError  # noqa: E402

N = 60
FAST = dict(dim=32, max_len=10, epochs=30, patience=4, batch_size=32, lr=5e-3, k=3, threads=1)


def _planted(n_users=400, seed=0):
    """Item i is always followed by item i + 1 (mod N): only the order of ids says so."""
    rng = np.random.default_rng(seed)
    histories = [(rng.integers(0, N) + np.arange(rng.integers(3, 12))) % N for _ in range(n_users)]
    return [h[:-1] for h in histories], [{int(h[-1])} for h in histories]


def test_sasrec_learns_which_item_follows_from_ids_alone():
    train, relevant = _planted()
    model, report = train_sasrec(train, N, SASRecSettings(**FAST), valid=(train[:100], relevant[:100]))
    assert report["valid_recall"] > 0.9 > 10 * FAST["k"] / N, report
    test = [(s + np.arange(5)) % N for s in range(N)]
    nxt = [{int((s + 5) % N)} for s in range(N)]
    assert recall_at(model.queries(test), model.item_vectors(), test, nxt, 1).mean() > 0.5  # chance: 1/55
    assert not model.queries([np.array([], np.int64)]).any()  # an empty history: a zero query
    scores = SASRecSystem(model, {}).scores(test[:3], [None] * 3)
    assert scores.shape == (3, N) and SASRecSystem(model, {}).name == SASREC


def test_training_is_seeded_and_a_refit_runs_exactly_its_epochs():
    train, relevant = _planted(150)
    s = SASRecSettings(**{**FAST, "epochs": 3})
    a, ra = train_sasrec(train, N, s, epochs=2)
    b, rb = train_sasrec(train, N, s, epochs=2)
    assert ra["epochs_run"] == rb["epochs_run"] == 2 and ra["valid_recall"] is None
    assert np.array_equal(a.item_vectors(), b.item_vectors())
    c, _ = train_sasrec(train, N, SASRecSettings(**{**FAST, "epochs": 3, "seed": 1}), epochs=2)
    assert not np.array_equal(a.item_vectors(), c.item_vectors())
    _, capped = train_sasrec(train, N, SASRecSettings(**{**FAST, "max_steps": 3}), valid=(train[:50], relevant[:50]))
    assert capped["steps"] == 3 and capped["epochs_run"] == 1  # the budget is work: the step cap ends it
    with pytest.raises(UserError, match="two items"):
        train_sasrec([np.array([1])], N, s)


def test_sasrec_is_an_eval_row_compared_with_what_the_job_publishes(tmp_path):
    from test_eval_cli import _eval  # the same eval run as the other end-to-end eval tests

    from groundrec.offline.demo import make_demo_data

    demo = make_demo_data(tmp_path / "data", n_items=120, n_users=60, seed=1)
    out = tmp_path / "report"
    res = _eval(demo, out, "sasrec_row=true", "sasrec_max_steps=12", "representations=[title]",
                "tuning.collab.weight=[0.0, 1.0]")
    assert res.exit_code == 0, res.output
    rows = {x["system"]: x for x in json.loads((out / "results.json").read_text())["rows"]}
    sasrec = rows[SASREC]
    assert sasrec["representation"] == "interactions" and sasrec["params"]["best_epoch"] >= 1
    assert sasrec["params"]["dropout"] in (0.2, 0.5)  # the paper's two, chosen on validation
    assert sasrec["params"]["steps"] <= 12  # its budget, from the eval config
    assert sasrec["valid_recall@20"] is not None and 0 <= sasrec["metrics"]["recall@20"]["mean"] <= 1
    md = (out / "report.md").read_text()
    assert "what the job would publish vs SASRec as published" in md
    # SASRec is a baseline, never "the best content-based system", even where it beats every content row
    result = json.loads((out / "results.json").read_text())
    top = max(x["metrics"]["recall@20"]["mean"] for x in result["rows"])
    for x in result["rows"]:
        if x["system"] == SASREC:
            x["metrics"]["recall@20"]["mean"] = top + 0.1
    lines = verdict(result)
    assert any(line.startswith("- A baseline is best overall: **SASRec") for line in lines)
    content = next(line for line in lines if line.startswith("- Best content-based system vs best baseline"))
    assert content.index("SASRec") > content.index(" vs **")  # SASRec is the baseline side of it
    res = _eval(demo, tmp_path / "without", "representations=[title]", "tuning.collab.weight=[0.0, 1.0]")
    rows = {x["system"] for x in json.loads((tmp_path / "without" / "results.json").read_text())["rows"]}
    assert SASREC not in rows  # off by default: it costs a training
