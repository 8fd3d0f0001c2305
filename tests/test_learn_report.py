"""The learn stage's typed report (offline/learn_report.py): its fields are what was chosen and
scored, and ``to_manifest()`` is the manifest's record of it, key for key and in order, through
the version's manifest on disk and back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from groundrec.offline.catalog import NO_IMAGE_COLUMN
from groundrec.offline.config import CollabConfig, load_job_config
from groundrec.offline.interactions import Interactions
from groundrec.offline.learn import learn
from groundrec.offline.publish import build_manifest
from groundrec.shared import artifact

# The manifest's record of a learn stage, in order: readers (the service, scripts) depend on it.
HYBRID_KEYS = ["model", "rank", "full_rank", "reg", "dropout", "users", "interactions", "items_with_interactions", "head_items",
               "max_dense_items", "items_from_content", "fit_seconds", "weight", "query_half_life", "fresh_weight",
               "fresh_slots", "recent_weight", "recent_days", "profile_half_life_days", "train_half_life_days", "hybrid", "projection", "window", "validation", "learn_seconds"]
CONTENT_KEYS = ["model", "rank", "reg", "dropout", *HYBRID_KEYS[HYBRID_KEYS.index("weight"):]]
WINDOW_KEYS = ["days", "from", "to", "interactions", "users", "unknown_items_dropped"]
VALIDATION_KEYS = ["users", "items", "metric", "chosen", "scores", "grid", "widened", "grid_warnings", "fresh", "fresh_slots",
                   "recent", "profile", "decay", "width", "width_folds"]
CHOSEN_KEYS = ["reg", "dropout", "half_life", "weight", "rank", "full_rank", "projected", "score"]


def _bundles(users: int = 300, repeats_only: bool = False, seed: int = 0):
    """Users buying within one of 6 bundles of 8 items (content that says nothing of them): the
    collaborative part must win. ``repeats_only``: every user buys their first item again and
    again (no item is new to them after the first: nobody can be held out)."""
    rng = np.random.default_rng(seed)
    rows, items, ts = [], [], []
    for u in range(users):
        bundle = rng.integers(6) * 8 + np.arange(8)
        bought = list(rng.choice(bundle, 5, replace=False))
        if repeats_only:
            bought = [bought[0]] * len(bought)
        rows += [u] * len(bought)
        items += bought
        ts += list(range(len(ts), len(ts) + len(bought)))
    inter = Interactions(np.array(rows), np.array(items), np.array(ts, dtype=np.float64) * 3600,
                         [f"u{u}" for u in range(users)], 3)
    content = rng.normal(size=(48, 16)).astype(np.float32)
    return inter, content / np.linalg.norm(content, axis=1, keepdims=True)


def _recorded(tmp_path, report):
    """The report as a version's manifest holds it: built by the job's writer, written to disk
    and read back."""
    cfg = load_job_config(None, {"catalog.path": str(tmp_path / "items.parquet"), "out": str(tmp_path / "art")})
    manifest = build_manifest(cfg, "v1", "/enc", 16, {}, {}, None, {}, report, [NO_IMAGE_COLUMN + ": from text"])
    artifact.write_manifest(tmp_path, manifest)
    return artifact.read_manifest(tmp_path)


def test_a_hybrid_report_is_recorded_as_collab_key_for_key(tmp_path):
    inter, content = _bundles()
    cfg = CollabConfig(rank=8, reg=[10.0], weight=[0.0, 1.0], fresh_weight=[0.0, 0.1], valid_users=100, widenings=1,
                       full_rank_max_mb=64.0)  # the exact model allowed (a budget for these items)
    learned = learn(inter, content, cfg)
    report, choice = learned.report, learned.choice
    assert report.hybrid and choice.weight > 0
    record = report.to_manifest()
    assert list(record) == HYBRID_KEYS and list(record["window"]) == WINDOW_KEYS
    assert list(record["validation"]) == VALIDATION_KEYS and list(record["validation"]["chosen"]) == CHOSEN_KEYS
    # each value is the typed field's
    assert record["rank"] == report.rank == learned.model.query.shape[1] and record["reg"] == choice.reg
    assert (record["weight"], record["query_half_life"], record["fresh_weight"], record["fresh_slots"]) == (
        choice.weight, choice.query_half_life, choice.fresh_weight, choice.fresh_slots)
    assert record["validation"]["chosen"] == {"reg": choice.reg, "dropout": choice.dropout,
                                              "half_life": choice.half_life, "weight": choice.weight,
                                              "rank": choice.rank, "full_rank": choice.full_rank,
                                              "projected": choice.projected, "score": choice.score}
    assert record["projection"] == (learned.projection.info if learned.projection else None)
    assert record["window"] == {"days": None, "from": "1970-01-01T00:00:00+00:00",
                                "to": report.window.end, "interactions": len(inter.items), "users": 300,
                                "unknown_items_dropped": 3}
    validation = record["validation"]
    assert validation["users"] == report.validation_users == 100 and validation["scores"] is report.scores
    assert validation["grid"] == report.axes == report.tuning.grid.axes
    assert validation["widened"] == report.tuning.widened and validation["grid_warnings"] == report.warnings
    assert validation["fresh"] == report.tuning.fresh.report()
    assert validation["fresh_slots"] == report.tuning.slots.report()
    assert validation["fresh"]["chosen"] == {"fresh_weight": choice.fresh_weight}
    # what width costs: the full model's validation score first, then every narrower width tried
    # (all 48 items are bought: the exact model of their EASE is 48 wide, and published as such
    # only when no narrower width passed the rule; the refit on every interaction is exact too)
    assert validation["width"] == report.tuning.width and validation["width"][0] == {
        "rank": 48, "projected": False, "score": validation["width"][0]["score"], "loss": 0.0, "se": 0.0,
        "within": True}
    assert record["full_rank"] == choice.full_rank and (report.rank == 48) == choice.full_rank
    assert [w["rank"] for w in validation["width"][1:] if not w["projected"]] == sorted(report.tuning.ranks)
    # each narrower width judged on the warm users too (the cold slice: users whose held-out item
    # is new to training), and the rule on each half of the users checked on the other
    assert all(w["slices"]["warm"]["users"] >= 2 for w in validation["width"][1:])
    assert validation["width_folds"] == report.tuning.width_folds and len(validation["width_folds"]) == 2
    assert {f["users"] + f["other_users"] for f in validation["width_folds"]} == {validation["users"]}
    assert record["learn_seconds"] == report.seconds
    # through the version: the manifest's collab is this dict, in this order; no learn section
    manifest = _recorded(tmp_path, report)
    assert manifest.collab == record and manifest.learn is None
    on_disk = json.loads((tmp_path / artifact.MANIFEST).read_text())
    assert json.dumps(on_disk["collab"]) == json.dumps(record)  # the same keys in the same order


def test_a_content_only_report_is_recorded_as_learn_with_the_grids_first_model(tmp_path):
    inter, content = _bundles()
    learned = learn(inter, content, CollabConfig(rank=8, reg=[10.0, 100.0], weight=[0.0], valid_users=100))
    report, record = learned.report, learned.report.to_manifest()
    assert not report.hybrid and learned.model is None and list(record) == CONTENT_KEYS
    assert record["model"] == "EASE, factorised" and record["rank"] == 8 and report.rank == 8
    assert record["hybrid"] is False and record["projection"] is None and report.projected_from is None
    assert record["validation"]["fresh"] is None and record["validation"]["fresh_slots"] is None
    assert record["validation"]["chosen"]["score"] == report.content_score  # weight 0 scores as content alone
    manifest = _recorded(tmp_path, report)
    assert manifest.learn == record and manifest.collab is None


def test_without_a_user_to_hold_out_nothing_is_scored_and_the_grid_is_the_configured_one():
    inter, content = _bundles(users=50, repeats_only=True)
    cfg = CollabConfig(rank=8, reg=[100.0, 10.0], weight=[0.0, 1.0], valid_users=20)
    report = learn(inter, content, cfg).report
    assert report.validation_users == 0 and report.tuning is None and report.scores == {}
    record = report.to_manifest()
    assert record["validation"]["chosen"] == {"reg": 10.0, "dropout": 0.0, "half_life": 0.0, "weight": 0.0,
                                              "rank": 8, "full_rank": False, "projected": False, "score": None}
    assert record["validation"]["grid"] == {"reg": [10.0, 100.0], "dropout": [0.0, 0.5], "half_life": [0.0, 10.0, 40.0],
                                            "weight": [0.0, 1.0]}
    assert record["validation"]["widened"] == [] and record["validation"]["grid_warnings"] == []
    assert report.content_score is None and report.warnings == []


def test_the_report_and_its_parts_are_frozen():
    inter, content = _bundles(users=50, repeats_only=True)
    report = learn(inter, content, CollabConfig(rank=8, valid_users=20)).report
    for part, name in ((report, "choice"), (report.window, "users"), (report.choice, "weight")):
        with pytest.raises(AttributeError):
            setattr(part, name, None)


def test_few_users_hold_out_several_items_each_and_are_scored_per_user():
    """60 users, fewer than the 200 of ``valid_users``: each holds out the new items of the later
    half of its history (3 of the 5 it bought; ``valid_items`` 60 makes it one each), and every
    rule compares users, not items: the width's folds split the 60 users."""
    inter, content = _bundles(users=60)
    cfg = CollabConfig(rank=8, reg=[10.0], weight=[1.0], valid_users=200)  # a hybrid, whose width is judged
    one_each = learn(inter, content, cfg.model_copy(update={"valid_items": 60})).report
    assert (one_each.validation_users, one_each.validation_items) == (60, 60)
    report = learn(inter, content, cfg).report
    assert (report.validation_users, report.validation_items) == (60, 180)
    validation = report.to_manifest()["validation"]
    assert (validation["users"], validation["items"]) == (60, 180)
    assert report.tuning.grid.scores and all(len(s) == 60 for s in report.tuning.grid.scores.values())
    assert report.hybrid and [f["users"] + f["other_users"] for f in validation["width_folds"]] == [60, 60]
    per_user = next(iter(report.tuning.grid.scores.values()))
    assert set(np.round(per_user * 3, 9).tolist()) <= {0.0, 1.0, 2.0, 3.0}  # a recall of 3 items


def test_a_large_catalog_holds_out_fewer_items_within_the_scoring_budget(monkeypatch):
    """The items held out shrink where scoring each against the whole catalog would pass
    ``holdout.SCORED_CELLS`` a pass (a 1M-item catalog: 2,000): here a budget of 60 rows of
    this catalog's items makes it one item a user, whatever ``valid_items`` says."""
    from groundrec.offline import holdout

    inter, content = _bundles(users=60)
    cfg = CollabConfig(rank=8, reg=[10.0], weight=[1.0], valid_users=200)
    monkeypatch.setattr(holdout, "SCORED_CELLS", 60 * len(content))
    report = learn(inter, content, cfg).report
    assert (report.validation_users, report.validation_items) == (60, 60)


def test_content_alone_records_the_profile_recency_its_validation_chose(tmp_path):
    """Each user's last two days are of one cluster, the ten days before of any: the learn stage
    (content alone: the grid holds weight 0 only) scores the recency half-lives on validation,
    keeps the one that beats the mean, and the manifest records it (with its search); the
    version's content part, as eval and the gate make it, is that recency profile."""
    from groundrec.offline.evaluation.systems import version_content

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(12, 16))
    label = np.repeat(np.arange(12), 10)
    content = (centres[label] + 0.3 * rng.normal(size=(120, 16))).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    rows, items, ts = [], [], []
    for u in range(300):
        old = [int(rng.integers(120)) for _ in range(20)]
        last = rng.choice(np.flatnonzero(label == rng.integers(12)), 5, replace=False).tolist()
        days = [d // 2 for d in range(20)] + [10, 10, 10, 11, 11]
        rows += [u] * 25
        items += old + last
        ts += [d * 86_400.0 + u for d in days]
    inter = Interactions(np.array(rows), np.array(items), np.array(ts), [f"u{u}" for u in range(300)], 0)
    cfg = CollabConfig(rank=16, weight=[0.0], recent_weight=[0.0], valid_items=300)  # one held-out item a user
    learned = learn(inter, content, cfg)
    c = learned.choice
    assert not learned.hybrid and c.profile_half_life_days == 1.0
    search = learned.report.tuning.profile
    assert search.rule["wins"] and search.rule["diff"] > 0.1
    recorded = _recorded(tmp_path, learned.report)
    assert recorded.profile_half_life_days == c.profile_half_life_days
    assert recorded.learn["validation"]["profile"]["chosen"] == {"profile_half_life_days": c.profile_half_life_days}
    system = version_content("v", "r", content, np.ones(120), None, c.profile_half_life_days)
    assert system.strategy == "recency" and system.half_life_days == c.profile_half_life_days
    assert version_content("v", "r", content, np.ones(120), None, 0.0).strategy == "mean"
    kept = learn(inter, content, cfg.model_copy(update={"profile_half_life_days": []}))
    assert kept.choice.profile_half_life_days == 0.0 and kept.report.tuning.profile is None
