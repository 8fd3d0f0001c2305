"""`groundrec eval` end to end on a synthetic catalog whose users have planted preferences."""

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from groundrec.offline.config import CollabGrid
from groundrec.offline.demo import make_demo_data
from groundrec.offline.dev.tiny_models import build_tiny_vision
from groundrec.shared.cli import app


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("eval-data"), n_items=120, n_users=60, seed=1)


def _eval(demo, out, *sets):
    args = ["eval", "--catalog", str(demo["catalog"]), "--interactions", str(demo["interactions"]),
            "--out", str(out), "-q", "--set", "split.holdout=last_n", "--set", "bootstrap=300",
            "--set", "permutations=2000"]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(app, args)


def test_eval_runs_every_system_and_content_beats_random(demo, tiny_vlm, tmp_path):
    vision = build_tiny_vision(tmp_path / "vit")
    out = tmp_path / "report"
    res = _eval(demo, out, f"vlm.model={tiny_vlm('smolvlm')}", f"vision_model={vision}",
                "prompt.fields=[category, colour, pattern]",
                "fidelity={category: category, colour: colour, pattern: pattern}")
    assert res.exit_code == 0, res.output
    for f in ("report.md", "report.html", "results.json", "primary_metric.png", "recall_at_k.png"):
        assert (out / f).stat().st_size > 0
    r = json.loads((out / "results.json").read_text())
    status = {x["name"]: (x["status"], x["reason"]) for x in r["representations"]}
    # the tiny VLM's gibberish has no parsable field: that representation is reported, with why
    structured = status.pop("vlm_structured")
    assert structured[0] == "not run" and "no parsable field" in structured[1]
    assert all(s == ("run", None) for s in status.values()), status
    rows = {x["label"]: x for x in r["rows"]}
    random_, title = rows["Random / -"], rows["VLM4Rec (mean + cosine) / title"]
    assert title["metrics"]["recall@20"]["mean"] >= random_["metrics"]["recall@20"]["mean"] + 0.3
    assert title["metrics"]["recall@20"]["ci_low"] > random_["metrics"]["recall@20"]["ci_high"]
    pair = next(p for p in r["pairwise"] if {p["a"], p["b"]} == {"Random / -", "VLM4Rec (mean + cosine) / title"})
    assert pair["significant"] and pair["p"] < 0.01
    # tiny models are flagged, not passed off as results
    assert "tiny random-weight" in rows["VLM4Rec (mean + cosine) / vlm_free"]["note"]
    assert "tiny random-weight" in rows["VLM4Rec (mean + cosine) / visual"]["note"]
    assert {"Item-item co-occurrence / interactions", "Most popular / -"} <= set(rows)
    tuned = [x for x in r["rows"] if x["system"].startswith("groundrec") and "hybrid" not in x["system"]
             and x["system"] != "groundrec published"]
    assert len(tuned) == 4 and all(x["representation"] == r["best_representation"] for x in tuned)
    # the collaborative rows: tuned on validation, the hybrid on the best representation
    cf, hybrid = rows["EASE factorised (collaborative) / interactions"], \
        rows[f"groundrec hybrid (content + collaborative) / {r['best_representation']} + interactions"]
    assert cf["params"]["reg"] in (1.0, 10.0, 100.0, 1000.0, 10000.0)
    # each tuned value of the hybrid is one its grid holds (as widened; reg and half-life may be
    # refined halfway between two); content alone (weight 0) tunes nothing past the grid
    grid, params = CollabGrid(), hybrid["params"]
    tried = {axis: getattr(grid, axis) + [w["value"] for w in hybrid["widened"] if w["axis"] == axis]
             for axis in ("reg", "dropout", "half_life", "weight", "fresh_weight", "fresh_slots")}
    assert params["weight"] in tried["weight"] and params["dropout"] in tried["dropout"]
    assert all(min(tried[axis]) <= params[axis] <= max(tried[axis]) for axis in ("reg", "half_life"))
    if params["weight"]:
        assert params["fresh_weight"] in tried["fresh_weight"] and params["fresh_slots"] in tried["fresh_slots"]
    else:
        assert params["half_life"] == params["fresh_weight"] == params["fresh_slots"] == 0
    # as the job: a rank and a projection only for a weight above 0
    assert hybrid["params"]["rank"] <= 128 and (hybrid["params"]["weight"] > 0 or not hybrid["params"]["projected"])
    # the hybrid's grid includes weight 0 over the best content profile: never worse on validation
    best_content = rows[f"groundrec best of all (tuned) / {r['best_representation']}"]
    assert hybrid["valid_recall@20"] >= best_content["valid_recall@20"] - 1e-12
    assert hybrid["params"]["strategy"] == best_content["params"]["strategy"]
    assert hybrid["metrics"]["recall@20"]["mean"] > random_["metrics"]["recall@20"]["ci_high"]
    # every row reports the cold and warm slices; last_n holdout of a synthetic catalog leaves both
    assert all(set(x["slices"]) == {"cold items", "warm items"} for x in r["rows"])
    assert sum(v["users"] for v in title["slices"].values()) >= r["protocol"]["test_users"]
    assert tuned[0]["params"]["strategy"] == "recency" and "half_life_days" in tuned[0]["params"]
    assert r["protocol"]["test_users"] == 60 and sum(r["protocol"]["split_counts"].values()) == \
        pq.read_table(demo["interactions"]).num_rows
    assert r["fidelity"]["fields"]["colour"]["n"] == 120
    md = (out / "report.md").read_text()
    assert "Holm" in md and "| Random |" in md
    # every verdict line that compares a tiny-model row says so on that line
    tiny_labels = [x["label"] for x in r["rows"] if x.get("note")]
    verdicts = md.split("## Verdict", 1)[1].split("\n## ", 1)[0].splitlines()
    compared = [ln for ln in verdicts if any(f"**{lbl}**" in ln for lbl in tiny_labels)]
    assert compared and all("tiny random-weight model" in ln for ln in compared), compared
    assert "<table>" in (out / "report.html").read_text()


def test_representations_that_cannot_be_built_are_reported_not_skipped(demo, tmp_path):
    out = tmp_path / "report"
    res = _eval(demo, out, "representations=[title, vlm_free, visual, fusion_concat]",
                f"vlm.model={tmp_path / 'no-such-vlm'}", f"vision_model={tmp_path / 'no-such-vision'}")
    assert res.exit_code == 0, res.output
    reps = {x["name"]: x for x in json.loads((out / "results.json").read_text())["representations"]}
    assert reps["title"]["status"] == "run"
    assert reps["vlm_free"]["status"] == "not run" and "VLM" in reps["vlm_free"]["reason"]
    assert reps["visual"]["status"] == "not run" and "vision model" in reps["visual"]["reason"]
    assert reps["fusion_concat"]["status"] == "not run" and "visual" in reps["fusion_concat"]["reason"]
    assert "**not run**" in (out / "report.md").read_text()


def test_eval_refuses_bad_input_with_a_clear_error(demo, tmp_path):
    res = _eval(demo, tmp_path / "r", "interactions.timestamp_column=when")
    assert res.exit_code == 2 and "lack column(s) ['when']" in res.output
    res = _eval(demo, tmp_path / "r", "representations=[pixels]")
    assert res.exit_code == 2 and "unknown representation" in res.output


def test_eval_takes_catalog_columns_by_other_names_and_sub_second_timestamps(demo, tmp_path):
    """An unseen catalog: no title/description columns (name, blurb) and a catalog block that
    does not list text_columns; interactions timed to the millisecond."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cat = pq.read_table(demo["catalog"])
    cat = cat.rename_columns([{"title": "name", "description": "blurb"}.get(c, c) for c in cat.column_names])
    pq.write_table(cat, tmp_path / "catalog.parquet")
    inter = pq.read_table(demo["interactions"])
    col = inter.column("timestamp")
    seconds = pc.cast(col, pa.int64()) if not pa.types.is_timestamp(col.type) else \
        pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
    ms = pc.cast(pc.add(pc.multiply(seconds, 1000), 123), pa.timestamp("ms"))
    pq.write_table(inter.set_column(inter.column_names.index("timestamp"), "timestamp", ms),
                   tmp_path / "interactions.parquet")
    config = tmp_path / "eval.yaml"
    config.write_text(f"catalog:\n  path: {tmp_path / 'catalog.parquet'}\n  images_root: {demo['catalog'].parent}\n"
                      "title_column: name\ndescription_column: blurb\nrepresentations: [title, description]\n")
    res = CliRunner().invoke(app, ["eval", "--config", str(config), "--interactions",
                                   str(tmp_path / "interactions.parquet"), "--out", str(tmp_path / "r"), "-q",
                                   "--set", "split.holdout=last_n", "--set", "bootstrap=200",
                                   "--set", "permutations=1000"])
    assert res.exit_code == 0, res.output
    rows = {x["label"] for x in json.loads((tmp_path / "r" / "results.json").read_text())["rows"]}
    assert {"VLM4Rec (mean + cosine) / title", "VLM4Rec (mean + cosine) / description"} <= rows


def test_user_templates_are_representations_of_their_own(demo, tmp_path):
    """A template over catalog columns is built, run and reported like a built-in one, and
    a tuned value on the edge of its grid widens the grid (recorded in the row and the report)."""
    out = tmp_path / "r"
    res = _eval(demo, out, "representations=[title]", "templates={title_colour: '{title}. {colour}'}",
                "tuning.half_life_days=[7.0, 30.0]")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    reps = {x["name"]: x for x in r["representations"]}
    assert reps["title_colour"]["status"] == "run" and reps["title_colour"]["description"] == "user template"
    assert reps["title_colour"]["example"].count(".") >= 1
    assert "VLM4Rec (mean + cosine) / title_colour" in {x["label"] for x in r["rows"]}
    recency = next(x for x in r["rows"] if x["system"] == "groundrec recency")
    # two values, both > 0: whichever wins is on an edge, so the grid grows beyond it at least once
    assert recency["widened"] and recency["widened"][0]["axis"] == "half_life_days"
    assert recency["widened"][0]["value"] not in (7.0, 30.0)
    assert "half_life_days widened to" in (out / "report.md").read_text()


def test_a_template_that_clashes_or_names_nothing_is_refused(demo, tmp_path):
    res = _eval(demo, tmp_path / "r", "templates={title: '{title}'}")
    assert res.exit_code != 0 and "built-in representation" in res.output
    res = _eval(demo, tmp_path / "r", "templates={plain: 'no fields'}")
    assert res.exit_code != 0 and "names no column" in res.output


def test_eval_on_a_catalog_without_an_image_column_runs_its_text_rows(demo, tmp_path, tiny_vlm):
    import pyarrow.parquet as pq

    path = tmp_path / "text_only.parquet"
    pq.write_table(pq.read_table(demo["catalog"]).drop_columns(["image"]), path)
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["eval", "--catalog", str(path), "--interactions", str(demo["interactions"]),
                                   "--out", str(out), "-q", "--set", "split.holdout=last_n", "--set", "bootstrap=200",
                                   "--set", "permutations=1000", "--set", "representations=[title, vlm_free, visual]",
                                   "--set", f"vlm.model={tiny_vlm('smolvlm')}"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    reps = {x["name"]: x for x in r["representations"]}
    assert reps["title"]["status"] == "run"
    for name in ("vlm_free", "visual"):
        assert reps[name]["status"] == "not run" and "no image column" in reps[name]["reason"]
    assert "VLM4Rec (mean + cosine) / title" in {x["label"] for x in r["rows"]}


def test_eval_with_the_cold_items_split_scores_only_items_it_never_trained_on(demo, tmp_path):
    out = tmp_path / "r"
    res = _eval(demo, out, "representations=[title]", "split.kind=cold_items", "split.cold_share=0.2")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["protocol"]["split"].startswith("item cold-start split")
    rows = {x["label"]: x for x in r["rows"]}
    # every held-out item is cold: the cold slice is every test user, the warm one nobody
    for row in rows.values():
        assert row["slices"]["cold items"]["users"] == r["protocol"]["test_users"]
        assert row["slices"]["warm items"]["users"] == 0
    # collaborative filtering alone cannot find an item it never saw; content can
    assert rows["EASE factorised (collaborative) / interactions"]["metrics"]["recall@20"]["mean"] == 0
    assert rows["VLM4Rec (mean + cosine) / title"]["metrics"]["recall@20"]["mean"] > 0
    # every row's lists are measured for diversity in one space (the title vectors), and reported
    assert r["diversity_space"] == "title" and all(0 <= x["lists"]["diversity@20"] <= 2 for x in rows.values())
    assert rows["Most popular / -"]["lists"]["diversity@20"] != rows["Random / -"]["lists"]["diversity@20"]
    assert "Diversity@20" in (out / "report.md").read_text()


def _test_training_items(demo) -> int:
    """Items bought in test's training part under split.holdout=last_n (every interaction but
    each user's last): the head of an exact model fitted on it."""
    inter = pq.read_table(demo["interactions"]).to_pandas().sort_values(["user_id", "timestamp"], kind="stable")
    return inter.groupby("user_id", sort=False).head(-1)["item_id"].nunique()


def test_a_narrowed_hybrid_is_reported_beside_its_full_width(demo, tmp_path):
    out = tmp_path / "r"
    # a collaborative weight forced on, and any narrower rank accepted: the width rule narrows
    # the exact model (every bought item's row of B) down to a quarter of tuning.collab.rank
    res = _eval(demo, out, "representations=[title]", "tuning.collab.weight=[1.0]", "tuning.collab.rank=16",
                "tuning.collab.rank_tolerance=1.0", "tuning.collab.full_rank_max_mb=2048")  # the exact model allowed
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    rows = {x["system"]: x for x in r["rows"]}
    published = rows["groundrec hybrid (content + collaborative)"]
    full = rows["groundrec hybrid at full width (what the width rule gave up)"]
    head = _test_training_items(demo)
    assert published["params"]["rank"] == 4 and full["params"]["rank"] == head > 64 and not full["params"]["projected"]
    own = ("rank", "projected", "fresh_weight", "fresh_slots")  # the full width's lift and places are its own
    assert {k: v for k, v in full["params"].items() if k not in own} == \
        {k: v for k, v in published["params"].items() if k not in own}
    assert full["params"]["fresh_slots"] in CollabGrid().fresh_slots and full["valid_recall@20"] is not None
    # what width costs: the exact model first, then the ladder 4, 8, 16, 32, 64, then the projection
    width = published["width"]
    assert [(w["rank"], w["projected"]) for w in width[1:]] == [(4, False), (8, False), (16, False), (32, False),
                                                                (64, False), (4, True)]
    assert width[0]["rank"] > 64 and width[0]["loss"] == 0 and all(w["within"] for w in width)
    assert all(w["slices"]["warm"]["users"] >= 2 for w in width[1:])  # judged on the warm users too
    assert [f["rank"] for f in published["width_folds"]] == [4, 4]  # each half of validation, any loss accepted
    md = (out / "report.md").read_text()
    assert "vs at its full width" in md and "## What width costs (validation)" in md
    assert md.count(": chosen on ") == 2 and "within the tolerance" in md


def test_the_published_row_the_recency_ease_row_and_a_variant_side_by_side(demo, tmp_path):
    """Exactly one row is what the job would publish; recency-weighted EASE is exact (one
    vector per bought item), tuned on the hybrid's grids; a grid variant is a row of its own."""
    out = tmp_path / "r"
    res = _eval(demo, out, "representations=[title]", "tuning.collab.weight=[0.0, 1.0, 10.0]",
                "tuning.collab.full_rank_max_mb=2048",  # the exact models allowed (the default's budget)
                "tuning.collab_variants={factorised: {full_rank_max_mb: 0, rank_confidence: 0}}")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    rows = {x["system"]: x for x in r["rows"]}
    mine = [x for x in r["rows"] if x["system"] == "groundrec published"]
    assert len(mine) == 1
    published, best = mine[0], r["best_representation"]
    assert published["representation"] == (f"{best} + interactions" if published["params"]["weight"] else best)
    if published["params"]["weight"]:
        assert published["params"]["fresh_slots"] in CollabGrid().fresh_slots
    recency = rows["EASE full rank + recency (collaborative)"]
    assert recency["params"]["rank"] == _test_training_items(demo)
    grid = CollabGrid()
    tried = {axis: getattr(grid, axis) + [w["value"] for w in recency["widened"] if w["axis"] == axis]
             for axis in ("reg", "half_life")}
    assert all(min(tried[a]) <= recency["params"][a] <= max(tried[a]) for a in ("reg", "half_life"))
    assert rows["EASE factorised (collaborative)"]["params"]["rank"] == 128
    variant = rows["groundrec hybrid (content + collaborative) [factorised]"]
    assert variant["params"]["rank"] <= 127 and variant["representation"] == f"{best} + interactions"
    hybrid = rows["groundrec hybrid (content + collaborative)"]
    assert hybrid["params"]["weight"] == 0 or hybrid["width"][0]["rank"] > variant["params"]["rank"]
    md = (out / "report.md").read_text()
    assert "what the job would publish vs recency-weighted EASE" in md


def test_the_sequence_encoder_is_a_row_of_its_own_and_published_only_as_the_job_would(demo, tmp_path):
    """With ``sequence_row`` the learned profile encoder is trained by the published row's learn
    stage and reported as ``groundrec sequence encoder``; the published row stays what the job
    would publish: the hybrid while the job's ``sequence.enabled`` is off, the encoder where it
    is on and validation chose it."""
    tiny = ["sequence.dim=8", "sequence.epochs=2", "sequence.valid_users=10", "sequence.max_len=8",
            "representations=[title]", "tuning.collab.weight=[0.0, 1.0]"]
    out = tmp_path / "off"
    res = _eval(demo, out, "sequence_row=true", *tiny)
    assert res.exit_code == 0, res.output
    rows = {x["system"]: x for x in json.loads((out / "results.json").read_text())["rows"]}
    encoder, published = rows["groundrec sequence encoder"], rows["groundrec published"]
    assert encoder["params"]["dim"] == 8 and "published_by_validation" in encoder["params"]
    assert "published_by_validation" not in published["params"]  # the job does not train it: the hybrid
    assert 0 <= encoder["metrics"]["recall@20"]["mean"] <= 1
    assert encoder["note"] is None  # no model of the run is a tiny stand-in (a note would say so)
    md = (out / "report.md").read_text()
    assert "the learned profile encoder vs eval's hybrid" in md
    out = tmp_path / "on"
    res = _eval(demo, out, "sequence.enabled=true", *tiny)
    assert res.exit_code == 0, res.output
    rows = [x for x in json.loads((out / "results.json").read_text())["rows"]]
    published = [x for x in rows if x["system"] == "groundrec published"]
    encoder = next(x for x in rows if x["system"] == "groundrec sequence encoder")
    assert len(published) == 1
    chose = encoder["params"]["published_by_validation"]
    assert ("published_by_validation" in published[0]["params"]) == chose
