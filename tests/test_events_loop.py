"""The loop end to end: events posted to the running service -> ``groundrec events export``
-> the job learns from them -> the new version is hot-loaded -> that user's list by user_id
comes from the new training."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pyarrow.parquet as pq
from typer.testing import CliRunner

from groundrec.offline.config import load_job_config
from groundrec.offline.job import run_job
from groundrec.online.client import AsyncClient, Client
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.online.testing import running
from groundrec.shared import artifact
from groundrec.shared.cli import app as cli
from groundrec.shared.events import Event, Impression, open_store
from groundrec.shared.tables import read_table
from helpers import publish_demo


def test_events_reach_the_nightly_job_and_come_back_as_a_hybrid(tmp_path, tiny_vlm):
    demo = publish_demo(tmp_path, tiny_vlm(), n_items=40, n_users=30)
    events_url = f"sqlite:///{tmp_path}/events.db"
    rows = pq.read_table(demo["interactions"]).to_pylist()
    user = rows[0]["user_id"]
    cfg = ServeConfig(artifacts=demo["artifacts"], events=events_url, reload_interval_s=0.2)
    with running(create_app(cfg)) as url, Client(url) as client:
        answer = client.add_events([{"user_id": r["user_id"], "item_id": r["item_id"], "timestamp": r["timestamp"]}
                                    for r in rows])
        assert answer.accepted == len(rows) and answer.duplicates == 0 and answer.unknown_items == 0
        before = client.recommend(user_id=user, k=5)
        assert before.fallback is None and before.version == demo["version"]

        out = tmp_path / "exported"
        result = CliRunner().invoke(cli, ["events", "export", "--events", events_url, "--out", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["events"] == len(rows) and report["days"] == len(list(out.glob("day=*")))
        assert CliRunner().invoke(cli, ["events", "export", "--events", events_url, "--out", str(out)]).exit_code == 0
        assert read_table(out).num_rows == len(rows)  # a re-export replaces its days, never doubles them

        overrides = {**demo["overrides"], "interactions.path": str(out), "collab.weight": [1.0], "collab.rank": 8}
        summary = run_job(load_job_config(None, overrides), progress=False)
        manifest = artifact.verify(summary.version_dir)
        assert manifest.collab is not None and manifest.collab["window"]["interactions"] == len(rows)
        deadline = time.time() + 30
        while httpx.get(url + "/readyz").json().get("version") != summary.version:
            assert time.time() < deadline, "the new version was not loaded"
            time.sleep(0.1)
        after = client.recommend(user_id=user, k=5)
        assert after.version == summary.version
        sent = client.recommend([r["item_id"] for r in rows if r["user_id"] == user], k=5)
        assert [i.item_id for i in after.items] == [i.item_id for i in sent.items]  # the same profile path
        assert [(i.item_id, i.score) for i in after.items] != [(i.item_id, i.score) for i in before.items]

        async def by_async():
            c = AsyncClient(url)
            try:
                return await c.recommend(user_id=user, k=5)
            finally:
                await c.aclose()

        assert asyncio.run(by_async()).items == after.items
        # the job also reads the store's URL directly
        direct = run_job(load_job_config(None, {**overrides, "interactions.path": events_url}), progress=False)
        assert artifact.verify(direct.version_dir).collab["window"]["interactions"] == len(rows)
        assert client.delete_user(user)["deleted_events"] == sum(r["user_id"] == user for r in rows)
    # retention: everything before the newest event's day goes, the rest stays
    newest = max(_seconds(r["timestamp"]) for r in rows)
    result = CliRunner().invoke(cli, ["events", "prune", "--events", events_url, "--before", str(newest)])
    assert result.exit_code == 0, result.output
    pruned = json.loads(result.output)
    kept = [r for r in rows if r["user_id"] != user and _seconds(r["timestamp"]) >= newest]
    assert pruned["left"] == len(kept) and pruned["erased"] > 0
    assert CliRunner().invoke(cli, ["events", "prune", "--events", events_url]).exit_code != 0  # which cut-off?


def test_prune_erases_old_impressions_alone_or_with_the_events(tmp_path):
    events_url = f"sqlite:///{tmp_path}/events.db"
    now = time.time()
    store = open_store(events_url)
    try:
        store.add([Event("u1", "a", now - 10 * 86_400, "view", 0.2, "e-old"),
                   Event("u1", "b", now - 86_400, "view", 0.2, "e-new")])
        store.add_impressions([Impression("r-old", "u1", now - 10 * 86_400, "v1", ("a", "b")),
                               Impression("r-mid", "u1", now - 4 * 86_400, "v1", ("a",)),
                               Impression("r-new", None, now - 86_400, "v1", ("b",))])
    finally:
        store.close()

    def prune(*args):
        result = CliRunner().invoke(cli, ["events", "prune", "--events", events_url, *args])
        return result.exit_code, result.output

    code, output = prune("--impressions-keep-days", "7")  # impressions only: the events stay
    assert code == 0, output
    report = json.loads(output)
    assert report["impressions_erased"] == 1 and report["erased"] == 0 and report["left"] == 2
    assert abs(report["impressions_before"] - (now - 7 * 86_400)) < 60 and report["before"] is None
    code, output = prune("--keep-days", "5", "--impressions-keep-days", "2")  # both, each its own cut-off
    assert code == 0, output
    report = json.loads(output)
    assert (report["erased"], report["left"], report["impressions_erased"]) == (1, 1, 1)
    store = open_store(events_url)
    try:
        assert [store.impression(r) is not None for r in ("r-old", "r-mid", "r-new")] == [False, False, True]
        assert [e.event_id for b in store.scan() for e in b] == ["e-new"]
    finally:
        store.close()
    code, output = prune("--before", str(now * 1000))  # milliseconds: every event would go
    assert code == 2 and "not milliseconds" in output and "--before" in output
    assert [e.event_id for b in open_store(events_url).scan() for e in b] == ["e-new"]
    code, output = prune("--keep-days", "5", "--before", "2020-01-01")
    assert code == 2 and "not both" in output
    code, output = prune()
    assert code == 2 and "--impressions-keep-days" in output


def _seconds(ts) -> float:
    return ts.timestamp() if hasattr(ts, "timestamp") else float(ts)


def test_backup_copies_a_store_under_writes_and_read_commands_refuse_a_missing_store(tmp_path):
    """`events backup`: one snapshot copied in one step while a writer commits every few
    milliseconds (the sqlite3 shell's .backup restarts at each commit and may never end). A
    mistyped path made export and prune create an empty store and succeed."""
    import threading

    url = f"sqlite:///{tmp_path}/events.db"
    store = open_store(url)
    store.add([Event(f"u{n % 50}", f"i{n % 300}", 1_700_000_000.0 + n, "view", 0.2, f"e{n}") for n in range(20_000)])
    stop, written = threading.Event(), []

    def writer():
        n = 0
        while not stop.is_set():
            store.add([Event("w", f"i{n}", time.time(), "view", 0.2, f"w{n}")])
            written.append(n)
            n += 1
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = CliRunner().invoke(cli, ["events", "backup", "--events", url, "--out", str(tmp_path / "b" / "copy.db")])
    finally:
        stop.set()
        thread.join()
        store.close()
    assert result.exit_code == 0, result.output
    assert written and json.loads(result.output)["bytes"] > 0
    copy = open_store(f"sqlite:///{tmp_path}/b/copy.db")
    try:
        assert 20_000 <= copy.count() <= 20_000 + len(written)
    finally:
        copy.close()
    again = CliRunner().invoke(cli, ["events", "backup", "--events", url, "--out", str(tmp_path / "b" / "copy.db")])
    assert again.exit_code == 2 and "never written over" in again.output
    missing = f"sqlite:///{tmp_path}/typo/events.db"
    for args in (["export", "--out", str(tmp_path / "x")], ["prune", "--keep-days", "1"]):
        r = CliRunner().invoke(cli, ["events", *args, "--events", missing])
        assert r.exit_code == 2 and "no such file" in r.output, r.output
    assert not (tmp_path / "typo").exists()
