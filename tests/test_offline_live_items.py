"""The next job takes the live catalog in (offline/live_items.py, ``offline run --live-items``):
the store's item changes read page by page and folded by the service's rule, laid over the
catalog file (put: added or replaced, patch: fields changed, delete: left out, hidden carried
as a column); the manifest's ``live_items.through``, which makes a service skip what the
version absorbed; and ``first_seen`` (first interaction, or a new item's first PUT)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from groundrec.offline.catalog import load_catalog
from groundrec.offline.config import load_job_config
from groundrec.offline.interactions import Interactions
from groundrec.offline.live_items import (Absorbed, absorb, apply_live_items, first_seen, live_items_url,
                                          read_live_items)
from groundrec.shared import artifact
from groundrec.shared.cli import app as cli
from groundrec.shared.config import CatalogConfig
from groundrec.shared.errors import UserError
from groundrec.shared.events import ItemChange, open_store


def _store(tmp_path, changes: list[tuple]) -> str:
    """A SQLite store holding ``changes`` (item, op, fields, timestamp), in that order."""
    url = f"sqlite:///{tmp_path}/events.db"
    store = open_store(url)
    try:
        store.add_item_changes([ItemChange(i, op, json.dumps(f), float(ts)) for i, op, f, ts in changes])
    finally:
        store.close()
    return url


def _catalog(tmp_path) -> CatalogConfig:
    rows = [{"item_id": f"c{i}", "image": f"c{i}.jpg", "title": f"title {i}", "description": f"about {i}",
             "price": float(i)} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "catalog.parquet")
    return CatalogConfig(path=tmp_path / "catalog.parquet")


def test_which_store_is_read():
    assert live_items_url(None, "interactions.parquet") is None  # a file: nothing live to read
    assert live_items_url(None, "sqlite:///e.db") == "sqlite:///e.db"  # the interactions' store by default
    assert live_items_url("none", "sqlite:///e.db") is None
    assert live_items_url("redis://h:6379/0", None) == "redis://h:6379/0"
    with pytest.raises(UserError, match="not an event store URL.*none"):
        live_items_url("changes.parquet", None)
    with pytest.raises(Exception, match="not an event store URL"):  # refused when the config is read
        load_job_config(None, {"catalog.live_items": "changes.parquet"})
    assert load_job_config(None, {"catalog.live_items": "none"}).catalog.live_items == "none"


def test_every_change_is_read_page_by_page_and_folded(tmp_path):
    url = _store(tmp_path, [("a", "put", {"title": "A"}, 1), ("b", "put", {"title": "B"}, 2),
                            ("a", "patch", {"title": "A2"}, 3), ("b", "delete", {}, 4), ("c", "patch", {}, 5)])
    state, through, count = read_live_items(url, page=2)
    assert (through, count) == (5, 5) and set(state) == {"a", "b", "c"}
    assert state["a"].fields == {"title": "A2"} and state["a"].whole and state["b"].deleted
    open_store(f"sqlite:///{tmp_path}/empty.db").close()  # a store with no item change
    assert read_live_items(f"sqlite:///{tmp_path}/empty.db") == ({}, 0, 0)
    with pytest.raises(UserError, match="no such file"):  # a mistyped path: said, not read as no change
        read_live_items(f"sqlite:///{tmp_path}/typo.db")
    assert not (tmp_path / "typo.db").exists()


def test_live_items_are_laid_over_the_catalog_file(tmp_path):
    cfg = _catalog(tmp_path)
    items = load_catalog(cfg)
    url = _store(tmp_path, [
        ("new", "put", {"title": "quokka lantern", "image": "/abs/new.jpg", "colour": "brass"}, 100),
        ("c1", "patch", {"hidden": True, "price": 9.5}, 101),
        ("c2", "delete", {}, 102),
        ("c3", "put", {"title": "replaced"}, 103),  # whole: its description and image are gone
        ("ghost", "patch", {"title": "nobody"}, 104),  # neither in the file nor put
    ])
    out, absorbed = absorb(items, url, cfg, tmp_path)
    rows = {r["item_id"]: r for r in out.to_pylist()}
    assert out.column("item_id").to_pylist() == ["c0", "c1", "c3", "new"]  # catalog order, new items last
    assert rows["new"]["title"] == "quokka lantern" and rows["new"]["description"] == ""
    assert rows["new"]["image_uri"] == "/abs/new.jpg" and rows["new"]["price"] is None
    assert rows["c1"]["hidden"] is True and rows["c1"]["price"] == 9.5 and rows["c1"]["title"] == "title 1"
    assert rows["c0"]["hidden"] is None and "available_until" not in out.column_names  # set by no change
    assert out.schema.field("hidden").type == pa.bool_() and out.schema.field("price").type == pa.float64()
    assert rows["c3"]["title"] == "replaced" and rows["c3"]["image"] is None and rows["c3"]["image_uri"] is None
    assert rows["c0"]["image_uri"] == str((tmp_path / "c0.jpg").resolve())
    assert absorbed.to_manifest() == {"through": 5, "changes": 5, "items": 5}
    assert absorbed.first_put == {"new": 100.0}  # c3 was in the file: not new
    assert any("'colour' (1 item(s))" in n and "ignored" in n for n in absorbed.notes)
    assert any("ghost" in n and "left out" in n for n in absorbed.notes)
    assert absorb(items, None, cfg, tmp_path) == (items, None)


def test_a_value_of_the_wrong_type_stops_the_job_with_the_fix(tmp_path):
    cfg = _catalog(tmp_path)
    state, _, _ = read_live_items(_store(tmp_path, [("c0", "patch", {"price": "cheap"}, 1)]))
    with pytest.raises(UserError, match="'c0': price='cheap' does not fit .* double column.*--live-items none"):
        apply_live_items(load_catalog(cfg), state, cfg, tmp_path)


def test_first_seen_is_the_first_interaction_or_an_earlier_first_put():
    inter = Interactions(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), np.array([5, 3, 9, 12]), ["u", "v"], 0)
    absorbed = Absorbed(first_put={"b": 2.0, "c": 100.0, "a": 4.0})
    column = first_seen(["a", "b", "c", "d"], inter, absorbed)
    assert column.type == pa.float64() and column.to_pylist() == [3.0, 2.0, 100.0, None]
    assert first_seen(["a", "b"], None, None).to_pylist() == [None, None]


def test_the_job_publishes_the_live_catalog_and_the_service_skips_what_it_absorbed(tmp_path, tiny_vlm):
    from groundrec.offline.demo import _draw, make_demo_data
    from groundrec.online.config import ServeConfig
    from groundrec.online.serving import build_serving

    paths = make_demo_data(tmp_path / "data", n_items=16, n_users=10)
    _draw("bag", "yellow", "dotted", 99).save(tmp_path / "data" / "images" / "new.jpg")
    url = _store(tmp_path, [
        ("new-lamp", "put", {"title": "Quokka lantern", "description": "A brass lantern.", "image": "images/new.jpg",
                             "category": "lamp", "colour": "yellow"}, 1000),
        ("demo-0002", "patch", {"hidden": True}, 1001),
        ("demo-0003", "delete", {}, 1002),
        ("demo-0004", "patch", {"price": 3.5}, 1003),
    ])
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({"collab": {"rank": 8, "weight": [1.0]}, "vlm": {"max_new_tokens": 4}}))
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(cli, ["offline", "run", "--config", str(config), "--catalog", str(paths["catalog"]),
                                      "--out", str(out), "--vlm", str(tiny_vlm()), "--runner", "local", "--no-export",
                                      "--text-columns", "title,description,category,colour",
                                      "--interactions", str(paths["interactions"]), "--live-items", url, "-q"])
    assert result.exit_code == 0, result.output
    assert "live items" in result.output
    path = artifact.current_path(out)
    manifest = artifact.verify(path)
    assert manifest.model_extra["live_items"] == {"through": 4, "changes": 4, "items": 4}
    assert any("price" in n for n in manifest.notes)
    items = {r["item_id"]: r for r in pq.read_table(path / artifact.ITEMS).to_pylist()}
    assert "demo-0003" not in items and len(items) == 16  # one deleted, one new
    lamp = items["new-lamp"]
    assert lamp["title"] == "Quokka lantern" and "Quokka lantern" in lamp["text"] and lamp["grounded"]
    assert lamp["image_uri"].endswith("new.jpg") and lamp["first_seen"] == 1000.0  # no interaction: its PUT
    assert items["demo-0002"]["hidden"] is True and items["demo-0001"]["hidden"] is None
    firsts: dict[str, float] = {}
    for r in pq.read_table(paths["interactions"]).to_pylist():
        firsts[r["item_id"]] = min(firsts.get(r["item_id"], np.inf), float(r["timestamp"]))
    some = next(i for i in sorted(firsts) if i in items)
    assert items[some]["first_seen"] == firsts[some]
    assert all(items[i]["first_seen"] is None for i in items if i not in firsts and i != "new-lamp")

    s = build_serving(ServeConfig(artifacts=out, events="none", compute="thread"), manifest.version, path)
    r = s.retriever
    n = r.v.index.ntotal
    state, _, _ = read_live_items(url)
    assert r.apply_live(list(state.values())) == {} and r.v.index.ntotal == n  # absorbed: no row added
    assert r.v.row_of["demo-0002"] in r.live.excluded() and "demo-0003" not in r.v.row_of
