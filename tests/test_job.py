"""The offline job end to end on small generated catalogs: bad input, crashes, Ray vs in-process."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from groundrec.offline import ground as ground_module
from groundrec.offline.ground import GroundImages
from groundrec.offline.job import run_job
from groundrec.online.version import load_version
from groundrec.shared import artifact
from groundrec.offline.config import load_job_config


def _cfg(small_catalog, out, vlm, **extra):
    overrides = {"catalog.path": str(small_catalog["path"]), "catalog.images_root": str(small_catalog["images_root"]),
                 "out": str(out), "vlm.model": str(vlm), "vlm.max_new_tokens": 6, "vlm.batch_size": 2,
                 "run.runner": "local", "export.enabled": False}
    overrides.update(extra)
    return load_job_config(None, overrides)


def test_bad_images_are_recorded_and_their_items_published_from_catalog_text(small_catalog, tmp_path, tiny_vlm):
    import pyarrow as pa

    catalog = pq.read_table(small_catalog["path"]).to_pylist()
    catalog += [{"item_id": "noposter", "image": None, "title": "a film without a poster", "description": ""},
                {"item_id": "blank", "image": None, "title": "", "description": ""}]
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(catalog), path)
    cfg = _cfg(small_catalog, tmp_path / "a", tiny_vlm(), **{"catalog.path": str(path)})
    summary = run_job(cfg, progress=False)
    assert summary.items_read == 11 and summary.grounded_new == 6
    assert summary.ungrounded == 4 and summary.dropped == 1 and summary.encoded == 10  # published ungrounded
    skipped = {r["item_id"]: r for r in pq.read_table(summary.version_dir / "skipped.parquet").to_pylist()}
    assert set(skipped) == {*small_catalog["bad"], "noposter", "blank"}
    assert "not found" in skipped["missing"]["reason"]
    assert "truncated" in skipped["truncated"]["reason"]
    assert "not an image" in skipped["notimage"]["reason"]
    assert skipped["blank"]["stage"] == "embed" and "nothing to embed" in skipped["blank"]["reason"]
    # the summary groups reasons by kind, not by file
    assert summary.skipped["image file not found"] == 1 and summary.skipped["corrupt or truncated image"] == 1
    assert summary.skipped["not an image (unrecognised or unsupported format)"] == 1
    # every item with something to embed is published: the bad images' items from their catalog text
    version = load_version(tmp_path / "a")
    assert sorted(version.item_ids) == sorted([*small_catalog["good"], *small_catalog["bad"], "noposter"])
    rows = {r["item_id"]: r for r in version.items.to_pylist()}
    assert rows["noposter"]["grounded"] is False and rows["noposter"]["text"] == "a film without a poster"
    assert rows["missing"]["text"] == "ghost" and rows["missing"]["ground_error"].startswith("read: ")
    assert rows["missing"]["vlm_text"] is None and all(rows[i]["grounded"] for i in small_catalog["good"])
    _, idx = version.index.search(np.asarray(version.vectors), 1)
    assert list(idx[:, 0]) == list(range(len(version.item_ids)))
    # ... so they are recommended and count in histories (one served answer through the real client)
    from groundrec.online.client import LocalClient

    answer = LocalClient(tmp_path / "a").recommend(["noposter"], k=3)
    assert answer.fallback is None and not answer.unknown_ids and answer.items
    items = pq.read_table(summary.version_dir / "items.parquet").to_pandas()  # users open it with pandas
    assert {"vlm_text", "text", "image_sha256", "parse_ok"} <= set(items.columns)
    # a WebP thumbnail for each readable image, none for the bad ones (the page shows a placeholder)
    from PIL import Image

    thumbs = {r["item_id"]: r["webp"] for r in pq.read_table(summary.version_dir / "thumbnails.parquet").to_pylist()}
    assert set(thumbs) == set(small_catalog["good"])
    for data in thumbs.values():
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "WEBP" and max(im.size) <= 256
    manifest = artifact.verify(summary.version_dir)
    assert manifest.counts["thumbnails_made"] == 6 and "thumbnails.parquet" in manifest.files


def test_structured_prompt_gives_field_columns(small_catalog, tmp_path, tiny_vlm):
    cfg = _cfg(small_catalog, tmp_path / "s", tiny_vlm(), **{"prompt.style": "structured",
                                                             "prompt.fields": ["colour", "pattern"],
                                                             "encoder.template": "{title}. {vlm_colour}"})
    summary = run_job(cfg, progress=False)
    items = pq.read_table(summary.version_dir / "items.parquet")
    assert {"vlm_colour", "vlm_pattern", "parse_error"} <= set(items.column_names)
    # A random model cannot answer the fields: every failure is recorded, raw text kept.
    grounded = items.filter(items.column("grounded"))
    assert summary.parse_failures == 6 and grounded.num_rows == 6 and all(grounded.column("parse_error").to_pylist())


def test_a_fixed_parser_reaches_the_cached_answers(small_catalog, tmp_path, tiny_vlm):
    """The cache keeps the VLM's text; a rerun parses it again with the run's parser (a cached
    item kept its old fields until the cache was deleted). The cache is left as an older parser
    would have left it: well-formed answers recorded as failed, with no fields."""
    import pyarrow as pa

    cfg = _cfg(small_catalog, tmp_path / "s", tiny_vlm(), **{"prompt.style": "structured",
                                                             "prompt.fields": ["colour", "pattern"]})
    assert run_job(cfg, progress=False).parse_failures == 6
    shards = sorted((cfg.resolved_cache_dir / "groundings").glob("shard-*.parquet"))
    assert shards
    for shard in shards:
        t = pq.read_table(shard)
        n = t.num_rows
        t = t.set_column(t.schema.get_field_index("vlm_text"), "vlm_text",
                         pa.array(['{"colour": "Red", "pattern": "striped"}'] * n))
        t = t.set_column(t.schema.get_field_index("vlm_fields"), "vlm_fields", pa.array(["{}"] * n))
        t = t.set_column(t.schema.get_field_index("parse_ok"), "parse_ok", pa.array([False] * n))
        pq.write_table(t, shard)
    again = run_job(cfg, progress=False)
    assert again.grounded_cached == 6 and again.parse_failures == 0
    items = pq.read_table(again.version_dir / "items.parquet")
    grounded = items.filter(items.column("grounded"))
    assert set(grounded.column("vlm_colour").to_pylist()) == {"Red"}
    assert set(grounded.column("vlm_pattern").to_pylist()) == {"striped"}


class _CrashOnSecondBatch(GroundImages):
    calls = 0

    def __call__(self, batch):
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("simulated crash in the middle of grounding")
        return super().__call__(batch)


def test_items_sharing_one_image_ask_the_vlm_once_and_each_gets_its_answer(small_catalog, tmp_path, tiny_vlm,
                                                                          monkeypatch):
    """Colour variants sold with one photo: each item sent its image to the VLM (two answers
    under one cache key) and all but one were counted as unreadable thumbnails."""
    import pyarrow as pa

    catalog = pq.read_table(small_catalog["path"]).to_pylist()[:6]
    catalog += [{**catalog[0], "item_id": f"i0-{c}", "title": f"{c} solid t-shirt"} for c in ("navy", "olive")]
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(catalog), path)
    sent = []
    real = GroundImages.__call__
    monkeypatch.setattr(GroundImages, "__call__", lambda self, batch: sent.extend(batch["item_id"]) or real(self, batch))
    summary = run_job(_cfg(small_catalog, tmp_path / "a", tiny_vlm(), **{"catalog.path": str(path)}), progress=False)
    assert sorted(sent) == [f"i{i}" for i in range(6)] and summary.grounded_new == 8 and not summary.skipped
    rows = {r["item_id"]: r for r in load_version(tmp_path / "a").items.to_pylist()}
    assert rows["i0-navy"]["vlm_text"] == rows["i0-olive"]["vlm_text"] == rows["i0"]["vlm_text"] is not None
    assert rows["i0-navy"]["grounded"] and rows["i0-navy"]["text"] != rows["i0"]["text"]  # its own title
    manifest = json.loads((summary.version_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["thumbnails_made"] == 8 and counts["thumbnails_unreadable"] == 0, counts


def test_an_empty_events_export_gives_a_fresh_install_its_first_version_and_never_replaces_a_learned_one(
        small_catalog, tmp_path, tiny_vlm):
    """The nightly unit exports the event store, then runs the job on the export: before the
    first event the export is a folder of no files, and every night failed (exit 2) telling
    the operator to rename columns."""
    import pyarrow as pa

    from groundrec.offline.interactions import NoInteractions

    empty = tmp_path / "events-export"
    empty.mkdir()
    cfg = _cfg(small_catalog, tmp_path / "a", tiny_vlm(), **{"interactions.path": str(empty)})
    first = run_job(cfg, progress=False)
    assert artifact.current_version(tmp_path / "a") == first.version and first.learned is None
    assert any("hold no rows" in n and "content alone" in n for n in first.notes), first.notes
    second = run_job(cfg, progress=False)  # the next night, still before the first event: the same again
    assert artifact.current_version(tmp_path / "a") == second.version
    events = tmp_path / "interactions.parquet"  # then a version learned from interactions serves
    pq.write_table(pa.table({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["i0", "i1", "i1", "i2"],
                             "timestamp": [1, 2, 3, 4]}), events)
    learned = run_job(_cfg(small_catalog, tmp_path / "a", tiny_vlm(), **{"interactions.path": str(events)}),
                      progress=False)
    assert learned.learned is not None and artifact.current_version(tmp_path / "a") == learned.version
    with pytest.raises(NoInteractions, match="serves, learned from interactions: nothing is published"):
        run_job(cfg, progress=False)  # an empty export now (a wiped store?): none learned from nothing replaces it
    assert artifact.list_versions(tmp_path / "a")[-1] == learned.version


def test_crash_keeps_published_version_and_finished_batches(small_catalog, tmp_path, tiny_vlm, monkeypatch):
    out = tmp_path / "c"
    first = run_job(_cfg(small_catalog, out, tiny_vlm()), progress=False)
    # A new prompt invalidates the cache; the run then crashes after one batch of two images.
    cfg = _cfg(small_catalog, out, tiny_vlm(), **{"prompt.free_prompt": "What is this?"})
    monkeypatch.setattr(ground_module, "GroundImages", _CrashOnSecondBatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_job(cfg, progress=False)
    assert artifact.current_version(out) == first.version
    assert artifact.list_versions(out) == [first.version]
    assert not any((out / artifact.STAGING).iterdir())
    load_version(out)  # still loads and verifies
    monkeypatch.setattr(ground_module, "GroundImages", GroundImages)
    again = run_job(cfg, progress=False)
    assert again.grounded_cached == 2 and again.grounded_new == 4  # the finished batch was kept


def test_a_version_serving_is_a_job_that_succeeded_even_if_its_activation_could_not_be_logged(
        small_catalog, tmp_path, tiny_vlm, monkeypatch):
    """CURRENT has moved when the activation is appended to the log: a full disk there made the
    job fail although its version was serving. It succeeds now and says what was not logged."""
    from groundrec.offline import job as job_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job_module.artifact, "record_activation", full_disk)
    out = tmp_path / "log"
    done = run_job(_cfg(small_catalog, out, tiny_vlm()), progress=False)
    assert artifact.current_version(out) == done.version
    assert any("could not be logged" in n and "No space left" in n for n in done.notes)


def test_rerun_is_cached_and_new_items_only_are_grounded(small_catalog, tmp_path, tiny_vlm):
    out = tmp_path / "r"
    first = run_job(_cfg(small_catalog, out, tiny_vlm()), progress=False)
    texts = pq.read_table(artifact.current_path(out) / "items.parquet").column("text").to_pylist()
    assert first.distinct_texts == len(set(texts)) and first.encoded_new == first.distinct_texts  # none cached
    first_vectors = np.asarray(load_version(out).vectors).copy()
    second = run_job(_cfg(small_catalog, out, tiny_vlm()), progress=False)
    assert second.grounded_new == 0 and second.grounded_cached == 6
    counts = artifact.verify(second.version_dir).counts
    assert counts["thumbnails_made"] == 0 and counts["thumbnails_from_cache"] == 6  # nothing decoded again
    assert second.encoded_new == 0 and second.encoded == 9  # embeddings come from the cache too
    assert np.array_equal(np.asarray(load_version(out).vectors), first_vectors)
    items = pq.read_table(artifact.current_path(out) / "items.parquet")
    assert items.column("from_cache").to_pylist() == items.column("grounded").to_pylist()  # every grounding
    third = run_job(_cfg(small_catalog, out, tiny_vlm(), **{"encoder.template": "{description}"}), progress=False)
    assert third.grounded_new == 0 and third.encoded_new == 6  # new texts: encoded afresh


def test_ray_pipeline_equals_in_process(small_catalog, tmp_path, tiny_vlm):
    local = run_job(_cfg(small_catalog, tmp_path / "l", tiny_vlm()), progress=False)
    ray_run = run_job(_cfg(small_catalog, tmp_path / "r", tiny_vlm(), **{"run.runner": "ray"}), progress=False)
    assert (local.runner, ray_run.runner) == ("local", "ray") and local.grounded_new == ray_run.grounded_new == 6
    a, b = load_version(tmp_path / "l"), load_version(tmp_path / "r")
    assert a.item_ids == b.item_ids
    assert a.items.column("vlm_text").to_pylist() == b.items.column("vlm_text").to_pylist()
    assert np.allclose(a.vectors, b.vectors, atol=1e-5)
    import ray

    assert not ray.is_initialized()


def _cli(*args, env_extra=None, timeout=120):
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "groundrec.shared.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("rows,message", [
    ([], "is empty"),
    ([{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d"}] * 2, "duplicate 'item_id'"),
    ([{"item_id": "a", "image": "a.jpg", "title": "t"}], "lacks column(s) ['description']"),
])
def test_cli_refuses_bad_catalogs_with_a_reason(tmp_path, rows, message):
    import pyarrow as pa

    table = pa.Table.from_pylist(rows) if rows else pa.table({"item_id": pa.array([], pa.string()),
                                                                 "image": pa.array([], pa.string()),
                                                                 "title": pa.array([], pa.string()),
                                                                 "description": pa.array([], pa.string())})
    pq.write_table(table, tmp_path / "c.parquet")
    r = _cli("offline", "run", "--catalog", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "o" / artifact.CURRENT).exists()


def test_cli_without_a_reachable_vlm_fails_fast_with_the_fix(tmp_path):
    r = _cli("demo", "--out", str(tmp_path / "d"), timeout=60)
    assert r.returncode == 2
    assert "make-tiny-vlm" in r.stderr and "--vlm" in r.stderr


def test_a_text_encoder_that_cannot_load_fails_before_anything_is_grounded(small_catalog, tmp_path, tiny_vlm):
    from groundrec.shared.errors import UserError

    cfg = _cfg(small_catalog, tmp_path / "o", tiny_vlm(), **{"encoder.model": str(tmp_path / "no-such-encoder")})
    with pytest.raises(UserError, match="text encoder path .*no-such-encoder is not a directory.*--encoder"):
        run_job(cfg, progress=False)
    assert not list((tmp_path / "o").rglob("*.parquet"))  # the VLM never ran: no grounding cached, nothing published


def test_cli_help_lists_the_documented_flags():
    r = _cli("offline", "run", "--help")
    for flag in ("--catalog", "--images-root", "--out", "--vlm", "--encoder", "--config", "--runner", "--interactions",
                 "--live-items"):
        assert flag in r.stdout


def test_config_file_drives_the_cli(small_catalog, tmp_path, tiny_vlm):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "catalog": {"path": str(small_catalog["path"]), "images_root": str(small_catalog["images_root"])},
        "out": str(tmp_path / "o"), "vlm": {"model": str(tiny_vlm()), "max_new_tokens": 4},
        "run": {"runner": "local"}, "export": {"enabled": False}}))
    r = _cli("offline", "run", "--config", str(cfg), "-q", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "published version" in r.stdout and "not grounded" in r.stdout
    assert artifact.current_version(tmp_path / "o") is not None


def test_a_catalog_without_an_image_column_is_published_from_its_text_without_a_vlm(small_catalog, tmp_path):
    import datetime as dt
    import decimal

    import httpx
    import pyarrow as pa

    from groundrec.online.client import LocalClient
    from groundrec.online.config import ServeConfig
    from groundrec.online.service import create_app
    from helpers import running

    catalog = pq.read_table(small_catalog["path"]).drop_columns(["image"])
    catalog = catalog.append_column("first_sold", pa.array([dt.datetime(2024, 1, n + 1) for n in range(catalog.num_rows)]))
    catalog = catalog.append_column("price", pa.array([decimal.Decimal("9.90")] * catalog.num_rows))
    path = tmp_path / "text_only.parquet"
    pq.write_table(catalog, path)
    # a VLM that does not exist: a text-only catalog never loads one
    cfg = _cfg(small_catalog, tmp_path / "art", tmp_path / "no-such-vlm", **{"catalog.path": str(path)})
    summary = run_job(cfg, progress=False)
    assert summary.items_read == summary.encoded == summary.ungrounded == catalog.num_rows
    assert summary.grounded_new == 0 and not summary.skipped  # nothing went wrong: there was nothing to ground
    assert len(summary.notes) == 1 and "no image column 'image'" in summary.notes[0]
    manifest = artifact.verify(summary.version_dir)
    assert manifest.notes == summary.notes and manifest.models["vlm"] is None
    items = pq.read_table(summary.version_dir / artifact.ITEMS)
    assert set(items.column("ground_error").to_pylist()) == {summary.notes[0]}
    ids = catalog.column("item_id").to_pylist()
    answer = LocalClient(tmp_path / "art").recommend(ids[:2], k=3)
    assert len(answer.items) == 3 and not set(ids[:2]) & {i.item_id for i in answer.items}
    with running(create_app(ServeConfig(artifacts=tmp_path / "art", events="none", compute="thread"))) as url:
        shown = httpx.get(url + f"/items/{ids[1]}")  # a date and a decimal column: JSON as text
        assert shown.status_code == 200 and shown.json()["item"]["first_sold"].startswith("2024-01-02")
        assert shown.json()["item"]["price"] == "9.90"
