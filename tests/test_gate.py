"""The promotion gate (offline/gate.py): the decision as a pure function, and the real job on a
dense catalog with planted preferences, published three times as the purchases grow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from groundrec.offline.config import load_job_config
from groundrec.offline.dev.dense_catalog import make_dense_data
from groundrec.offline.gate import EXIT_REFUSED, decide, fewest_users, resolve_mode
from groundrec.offline.job import run_job
from groundrec.shared import artifact


def test_the_decision_refuses_only_a_significantly_worse_candidate():
    rng = np.random.default_rng(0)
    serving = rng.random(400)
    ok, p, reason = decide(serving - 0.3 * rng.random(400), serving, 0.05)
    assert not ok and p < 0.05 and "significantly worse" in reason
    ok, p, _ = decide(serving + rng.normal(0, 0.01, 400), serving, 0.05)
    assert ok and p > 0.05  # a tiny difference either way: not refused
    assert decide(serving + 0.1, serving, 0.05)[0]  # better: activated
    assert decide(np.zeros(0), np.zeros(0), 0.05)[0]  # nobody to compare on: activated, said so
    # on 5 users the test's p is at least 2^-4 > 0.05: a candidate worse for each passed as "not significantly
    # worse"; the gate says it could not compare (6 users: it can refuse)
    assert fewest_users(0.05) == 6 and fewest_users(0.01) == 8
    ok, p, reason = decide(np.zeros(5), np.ones(5), 0.05, fewest_users(0.05))
    assert ok and p is None and "fewer than the 6" in reason and "not compared" in reason
    assert not decide(np.zeros(6), np.ones(6), 0.05, fewest_users(0.05))[0]


def test_auto_gates_only_with_interactions_and_a_serving_version():
    assert resolve_mode("auto", True, "v1") == "gate"
    assert resolve_mode("auto", False, "v1") == resolve_mode("auto", True, None) == "always"
    assert resolve_mode("never", True, "v1") == "never"


T0 = 1_700_000_000


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_vlm):
    """A dense catalog whose purchases arrive in three periods (each user's steps 0-19, 20-29, 30+)."""
    root = tmp_path_factory.mktemp("gate")
    paths = make_dense_data(root / "data", n_items=300, n_users=250, per_user=40, seed=3)
    table = pq.read_table(paths["interactions"])
    seconds = pc.cast(pc.cast(table.column("timestamp"), "timestamp[s]"), "int64")
    for name, upto in (("first", 20), ("second", 30)):
        pq.write_table(table.filter(pc.less(seconds, T0 + upto * 3600)), root / f"{name}.parquet")
    return {"root": root, "catalog": paths["catalog"], "all": paths["interactions"],
            "first": root / "first.parquet", "second": root / "second.parquet", "out": root / "artifacts",
            "vlm": str(tiny_vlm())}  # the catalog's image column is empty: no image is grounded


def _overrides(shop, interactions, **more):
    return {"catalog.path": str(shop["catalog"]), "out": str(shop["out"]), "interactions.path": str(interactions),
            "catalog.text_columns": ["title"], "encoder.template": "{title}", "run.runner": "local",
            "export.enabled": False, "thumbnails.enabled": False, "vlm.model": shop["vlm"], **more}


def test_the_gate_activates_a_better_candidate_and_refuses_a_worse_one(shop):
    # First a content-only version (the hybrid's weight held at 0), then a hybrid: better.
    first = run_job(load_job_config(None, _overrides(shop, shop["first"], **{"collab.weight": [0.0]})), progress=False)
    assert first.gate.mode == "always" and artifact.current_version(shop["out"]) == first.version
    second = run_job(load_job_config(None, _overrides(shop, shop["second"])), progress=False)
    g = second.gate
    assert second.learned.hybrid and g.mode == "gate" and g.serving_version == first.version and g.users > 50
    assert g.activated and g.candidate > g.serving, g
    assert artifact.current_version(shop["out"]) == second.version
    manifest = artifact.read_manifest(second.version_dir)
    assert manifest.gate["activated"] and manifest.gate["candidate"] is not None and manifest.gate["p_value"] is not None

    # A content-only candidate against the hybrid serving: worse on the period since its cutoff.
    cmd = [sys.executable, "-m", "groundrec.shared.cli", "offline", "run", "--catalog", str(shop["catalog"]),
           "--out", str(shop["out"]), "--interactions", str(shop["all"]), "--text-columns", "title",
           "--template", "{title}", "--runner", "local", "--no-export", "--vlm", shop["vlm"], "-q"]
    config = shop["root"] / "content_only.yaml"
    config.write_text(json.dumps({"collab": {"weight": [0.0]}, "thumbnails": {"enabled": False}}))
    refused = subprocess.run(cmd + ["--config", str(config)], capture_output=True, text=True)
    assert refused.returncode == EXIT_REFUSED, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "NOT current" in refused.stdout and "significantly worse" in refused.stdout
    assert artifact.current_version(shop["out"]) != (newest := artifact.list_versions(shop["out"])[-1])
    gate = artifact.read_manifest(artifact.version_path(shop["out"], newest)).gate
    assert gate["mode"] == "gate" and not gate["activated"] and gate["candidate"] < gate["serving"]

    # The manual override activates it and records that the gate was bypassed.
    override = subprocess.run([sys.executable, "-m", "groundrec.shared.cli", "versions", "activate", newest,
                               "--artifacts", str(shop["out"])], capture_output=True, text=True)
    assert override.returncode == 0 and "bypass" in override.stdout
    assert artifact.current_version(shop["out"]) == newest
    log = artifact.activations(shop["out"])
    assert log[-1]["version"] == newest and log[-1]["gate_bypassed"] and not log[0]["gate_bypassed"]


def _an_older_version_to_roll_back_to(shop) -> tuple[dict, str]:
    """The job's settings (activating always) and a published version CURRENT does not name."""
    always = _overrides(shop, shop["first"], **{"publish.activate": "always", "collab.weight": [0.0]})
    while len(artifact.list_versions(shop["out"])) < 2:
        run_job(load_job_config(None, always), progress=False)
    return always, next(v for v in artifact.list_versions(shop["out"]) if v != artifact.current_version(shop["out"]))


def test_a_rollback_made_while_a_job_runs_is_not_overridden_by_its_activation(shop, monkeypatch):
    """The job read CURRENT when it gated; an operator rolled back meanwhile: the job publishes
    its version without activating it (it moved CURRENT over the rollback)."""
    import groundrec.offline.job as job

    always, target = _an_older_version_to_roll_back_to(shop)
    real = job.run_gate

    def rolled_back_meanwhile(*args, **kwargs):
        decision = real(*args, **kwargs)
        artifact.activate(shop["out"], target)  # the operator's rollback, while the job goes on
        return decision

    monkeypatch.setattr(job, "run_gate", rolled_back_meanwhile)
    summary = run_job(load_job_config(None, always), progress=False)
    assert not summary.gate.activated and "CURRENT moved during this run" in summary.gate.reason
    assert summary.gate.mode == "held" and artifact.gate_refused(shop["out"], summary.version) is None  # no exit 3
    assert artifact.current_version(shop["out"]) == target and summary.version in artifact.list_versions(shop["out"])
    assert not artifact.read_manifest(summary.version_dir).gate["activated"]


def test_a_rollback_made_before_the_gate_reads_current_holds_too(shop, monkeypatch):
    """The job read CURRENT only when it gated, hours into the run (after grounding and
    learning): a rollback made during the learn stage became the gate's baseline, and the job
    activated its version over it."""
    import groundrec.offline.job as job

    always, target = _an_older_version_to_roll_back_to(shop)
    real = job.learn

    def rolled_back_while_learning(*args, **kwargs):
        artifact.activate(shop["out"], target)  # the operator's rollback, before the gate reads CURRENT
        return real(*args, **kwargs)

    monkeypatch.setattr(job, "learn", rolled_back_while_learning)
    summary = run_job(load_job_config(None, always), progress=False)
    assert not summary.gate.activated and summary.gate.mode == "held" and "CURRENT moved" in summary.gate.reason
    assert artifact.current_version(shop["out"]) == target


def test_a_training_window_s_end_is_kept_to_the_microsecond_so_its_last_events_stay_before_the_gate_s_window():
    """The window's end was written in whole seconds: the serving version's own last events
    (fractional times, as POST /events stores them) became the gate's targets."""
    from datetime import datetime

    from groundrec.offline.gate import cutoff_of
    from groundrec.offline.learn import window_time

    t = 1_700_000_000.987654
    end, start = window_time(t), window_time(t, up=False)
    assert t <= datetime.fromisoformat(end).timestamp() < t + 2e-6
    assert t - 2e-6 < datetime.fromisoformat(start).timestamp() <= t
    manifest = artifact.Manifest(version=artifact.new_version_id(), created_at="now", code_version="test", models={},
                                 prompt={}, text_template="{t}", dim=4, counts={}, index={}, timings_s={},
                                 learn={"window": {"to": end}})
    assert cutoff_of(manifest) >= t  # an event at t is before the window, not in it


def test_a_job_on_older_interactions_does_not_replace_a_version_that_learned_from_newer_ones(shop, tmp_path):
    """A re-run on an older snapshot had an empty window (no event after the serving version's
    cutoff) and was activated over the newer version 'with nothing to compare on'."""
    out = {"out": str(tmp_path / "artifacts")}
    newer = run_job(load_job_config(None, _overrides(shop, shop["second"], **out)), progress=False)
    assert newer.gate.activated and artifact.current_version(out["out"]) == newer.version
    older = run_job(load_job_config(None, _overrides(shop, shop["first"], **out)), progress=False)
    assert older.gate.mode == "gate" and not older.gate.activated, older.gate
    assert "before the last one the serving version" in older.gate.reason
    assert artifact.current_version(out["out"]) == newer.version
    again = run_job(load_job_config(None, _overrides(shop, shop["second"], **out)), progress=False)
    assert again.gate.activated and "nothing to compare on" in again.gate.reason  # the same data: no refusal


def test_a_user_whose_history_a_version_does_not_hold_is_scored_on_its_popular_fallback():
    """The service answers such a user with the popular list; the gate scored them 0 (a serving
    version without the items added since it was published lost every such user)."""
    from groundrec.offline.evaluation.systems import ContentSystem
    from groundrec.offline.gate import Window, recall_of

    content = np.eye(4, dtype=np.float32)
    system = ContentSystem("serving", "published", content, np.array([1.0, 50.0, 2.0, 3.0]))
    window = Window([["not-held"], ["a"]], [{"b"}, {"c"}], [[0.0], [0.0]])
    got = recall_of(system, {"a": 0, "b": 1, "c": 2, "d": 3}, window, 1)
    assert got.tolist() == [1.0, 0.0]  # the most popular item b; a's list (by content) is not c


def test_a_version_s_recency_is_judged_with_the_window_users_times():
    """A content-only version whose default is recency is scored on each window user's history
    with its times (as the service fills a user_id's): the user's last item, a day old, outweighs
    the old ones, so the list follows it; with the times lost every item weighs alike."""
    from groundrec.offline.evaluation.systems import version_content
    from groundrec.offline.gate import recall_of, window_users
    from groundrec.offline.interactions import Interactions

    content = np.array([[1, 0, 0], [1, 0.1, 0], [1, -0.1, 0], [1, 0, 0.1], [0, 1, 0], [0.1, 1, 0]], np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    ids = ["a0", "a1", "a2", "a3", "b0", "b1"]
    day = 86_400.0
    # old: a0, a1, a2; a day before the cutoff: b0; in the window: b1 (a3: never bought)
    inter = Interactions(np.zeros(5, np.int64), np.array([0, 1, 2, 4, 5]), np.array([0, day, 2 * day, 30 * day, 32 * day]),
                         ["u"], 0)
    window = window_users(inter, ids, 31 * day, 10)
    assert window.histories == [["a0", "a1", "a2", "b0"]] and window.targets == [{"b1"}]
    assert window.times == [[0.0, day, 2 * day, 30 * day]]
    row_of = {i: n for n, i in enumerate(ids)}
    recency = version_content("serving", "published", content, np.ones(6), None, 1.0)
    assert recall_of(recency, row_of, window, 1).tolist() == [1.0]  # b1, next to the day-old b0
    mean = version_content("serving", "published", content, np.ones(6), None, 0.0)
    assert recall_of(mean, row_of, window, 1).tolist() == [0.0]  # a3, next to the three old items
