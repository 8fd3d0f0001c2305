"""The live catalog's rules (shared/live_items.py: fold, record) and live items applied to a
served version (online/live.py) on flat, HNSW and IVF indexes: found by text, recommendable,
removed when hidden or deleted, a changed item re-embedded, applying twice changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.schemas import RecommendRequest
from groundrec.online.serving import build_serving
from groundrec.shared import artifact
from groundrec.shared.events import ItemChange
from groundrec.shared.live_items import LiveItem, catalog_columns, fold, record
from groundrec.shared.text import item_text, render
from helpers import publish_demo


def ch(seq, item, op, ts=None, **fields):
    return ItemChange(item, op, json.dumps(fields), float(ts if ts is not None else seq), seq)


def test_fold_puts_patches_and_deletes_in_commit_order():
    state: dict[str, LiveItem] = {}
    assert fold(state, [ch(1, "a", "put", title="A", image="a.jpg"), ch(2, "b", "patch", hidden=True),
                        ch(3, "a", "patch", price=3.0), ch(4, "a", "put", title="A2", image="a.jpg")]) == ["a", "b"]
    a, b = state["a"], state["b"]
    assert a.fields == {"title": "A2", "image": "a.jpg"} and a.whole and a.first_seen == 1.0 and a.seq == 4
    assert b.fields == {"hidden": True} and not b.whole and b.first_seen is None and not b.shown(0)
    fold(state, [ch(5, "a", "delete"), ch(6, "a", "put", ts=60, title="again")])
    assert state["a"].first_seen == 60.0 and not state["a"].deleted  # deleted, then put anew: new again
    fold(state, [ch(7, "d", "patch", available_until=10.0), ch(8, "e", "delete"), ch(9, "e", "patch", title="x")])
    assert state["d"].shown(9.9) and not state["d"].shown(10.0)
    assert state["e"].deleted and state["e"].seq == 8  # a patch after a delete leaves it deleted


def test_record_keeps_grounded_fields_unless_the_image_changed():
    base = {"item_id": "x", "title": "old", "image": "x.jpg", "vlm_text": "a red dress", "price": 2.0, "text": "t"}
    columns = list(base)
    put = LiveItem("x", {"title": "new", "image": "x.jpg"}, whole=True)
    assert record(put, base, columns) == {**base, "title": "new", "price": None}  # a PUT is the item whole
    patch = LiveItem("x", {"price": 3.0}, whole=False)
    assert record(patch, base, columns) == {**base, "price": 3.0}
    moved = LiveItem("x", {"image": "y.jpg"}, whole=False)
    assert record(moved, base, columns)["vlm_text"] is None and record(moved, base, columns)["image"] == "y.jpg"
    same = LiveItem("x", {"image": "x.jpg", "title": "new"}, whole=False)  # a feed re-sending the same image
    assert record(same, base, columns)["vlm_text"] == "a red dress"
    assert record(LiveItem("x", {"title": "no image"}, whole=True), base, columns)["vlm_text"] is None
    # what the job learned of it from interactions is not the image's: /latest and the prior keep it
    seen = {**base, "first_seen": 1e9, "recent_interactions": 3, "ground_error": "", "parse_error": ""}
    for item in (LiveItem("x", {"title": "new", "image": "y.jpg"}, whole=True), moved):
        row = record(item, seen, list(seen))
        assert (row["first_seen"], row["recent_interactions"]) == (1e9, 3)
        assert row["ground_error"] is None and row["parse_error"] is None and row["vlm_text"] is None
    assert catalog_columns(columns) == ["title", "image", "price"]
    # rules the job took in as columns: a patch keeps them, a PUT is the item whole (as fold reads it), whatever its image
    ruled = {**base, "hidden": True, "available_until": 4e9, "image_uri": "x.jpg"}
    for image in ("x.jpg", "y.jpg"):
        row = record(LiveItem("x", {"title": "new", "image": image}, whole=True), ruled, list(ruled))
        assert (row["hidden"], row["available_until"]) == (None, None)
    assert record(LiveItem("x", {"available_until": 5e9}, whole=False), ruled, list(ruled))["hidden"] is True
    assert record(LiveItem("x", {"image": "y.jpg"}, whole=False), ruled, list(ruled))["image_uri"] is None  # not x.jpg
    assert render("{title}. {vlm_text}", {"title": "new", "vlm_text": None}) == "new"


def test_a_live_item_s_fields_are_read_as_their_columns_store_them_before_its_text_is_rendered():
    """A price sent as 20 for a float column rendered "20" online where the job, rendering its
    stored row, writes "20.0": another text, another vector than the next job's."""
    import pyarrow as pa

    schema = pa.schema([("item_id", pa.string()), ("title", pa.string()), ("price", pa.float64()),
                        ("stock", pa.int64())])
    sent = LiveItem("x", {"title": "coat", "price": 20, "stock": 3}, whole=True)
    row = record(sent, None, schema.names, schema=schema)
    stored = pa.Table.from_pylist([record(sent, None, schema.names)], schema=schema).to_pylist()[0]
    assert row == stored and row["price"] == 20.0 and isinstance(row["price"], float)
    assert render("{title}, {price}", row) == render("{title}, {price}", stored) == "coat, 20.0"


def test_a_catalog_whose_image_column_has_another_name_changes_its_image_there():
    """The rule read the column ``image`` whatever the catalog's was (``--image-column photo``):
    a new photo kept the old photo's grounded fields and its thumbnail. The version's manifest
    names the column (``catalog_image_column``; ``image`` for manifests written before it)."""
    base = {"item_id": "x", "title": "old", "photo": "x.jpg", "vlm_text": "a red dress"}
    moved = LiveItem("x", {"photo": "y.jpg"}, whole=False)
    assert record(moved, base, list(base))["vlm_text"] == "a red dress"  # read as the column "image": unchanged
    assert record(moved, base, list(base), image_column="photo")["vlm_text"] is None
    assert artifact.Manifest.model_validate({**_manifest_fields(), "id_column": "item_id"}).catalog_image_column == "image"


def _manifest_fields() -> dict:
    return dict(version="v", created_at="now", code_version="test", models={}, prompt={}, text_template="{t}", dim=4,
                counts={}, index={}, timings_s={})


@pytest.fixture(scope="module", params=["flat", "hnsw", "ivf"])
def serving(request, tmp_path_factory, tiny_vlm):
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    pub = publish_demo(root, tiny_vlm(), n_items=60) if request.param == "flat" else None
    if pub is None:
        from groundrec.offline.config import load_job_config
        from groundrec.offline.job import run_job

        base = publish_demo(root / "base", tiny_vlm(), n_items=60)
        overrides = {**base["overrides"], "index.kind": request.param, "out": str(root / "artifacts")}
        run_job(load_job_config(None, overrides), progress=False)
        pub = {**base, "artifacts": root / "artifacts"}
    vid = artifact.current_version(pub["artifacts"])
    s = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                      artifact.locate(pub["artifacts"], vid))
    return s, pub


def _live(item_id, seq, **fields):
    return LiveItem(item_id, fields, whole=True, first_seen=float(seq), updated=float(seq), seq=seq)


def test_live_items_are_searched_recommended_removed_and_reapplied_idempotently(serving):
    s, pub = serving
    r = s.retriever
    n = r.v.index.ntotal
    items = [_live(f"new-{i}", i + 1, title=f"quokka lantern {i}", description="A quokka lantern.")
             for i in range(5)]
    computed = s.apply_live((items, None))
    assert set(computed) == {i.item_id for i in items} and r.v.index.ntotal == n + 5
    assert np.allclose(computed["new-2"], r.encoder.encode([render(r.v.manifest.text_template,
                                                                   {"title": "quokka lantern 2",
                                                                    "description": "A quokka lantern."})])[0],
                       atol=1e-5)
    assert r.search("quokka lantern 3", k=5).items[0].item_id == "new-3"
    assert s.apply_live((items, None)) == {} and r.v.index.ntotal == n + 5  # applied before: nothing happens
    history = pub["histories"][0]
    top = [x.item_id for x in r.recommend(RecommendRequest(history=["new-1"], k=10)).items]
    assert "new-1" not in top and len(top) == 10  # seen, and a known history

    # hidden: in no list; a catalog item changed: re-embedded, its old row gone from answers
    s.apply_live(([LiveItem("new-3", {"hidden": True}, False, None, 9.0, 9)], None))
    assert "new-3" not in [x.item_id for x in r.search("quokka lantern 3", k=70).items]
    old = history[0]
    old_row = r.v.row_of[old]
    s.apply_live(([LiveItem(old, {"title": "quokka lantern deluxe"}, False, None, 10.0, 10)], None))
    assert r.v.row_of[old] != old_row and r.v.item_ids.count(old) == 2
    found = [x.item_id for x in r.search("quokka lantern deluxe", k=70).items]
    assert found.count(old) == 1 and s.item(old)["item"]["title"] == "quokka lantern deluxe"
    batch = r.recommend_batch([RecommendRequest(history=history[1:], k=70)])[0]
    assert [x.item_id for x in batch.items] == [x.item_id for x in r.recommend(
        RecommendRequest(history=history[1:], k=70)).items]
    assert sum(x.item_id == old for x in batch.items) <= 1 and "new-3" not in [x.item_id for x in batch.items]

    s.apply_live(([LiveItem("new-0", {}, True, 1.0, 11.0, 11, deleted=True)], None))
    assert s.unknown(["new-0", "new-1"]) == 1
    assert "new-0" not in [x.item_id for x in r.search("quokka lantern 0", k=70).items]


def test_what_a_version_never_held_is_left_out_and_latest_still_answers(serving):
    """A process that reads the live catalog afresh (a restart, a hot swap, another replica)
    folds a PUT then a DELETE into one deleted item: /latest lists the others, never it. A
    patch of an item this version never held (put into a later version, then rolled back) adds
    no item with empty columns."""
    s, _ = serving
    r = s.retriever
    n = r.v.index.ntotal
    state: dict[str, LiveItem] = {}
    fold(state, [ch(2001, "gone", "put", title="ephemeral lamp"), ch(2002, "gone", "delete"),
                 ch(2003, "elsewhere", "patch", title="quokka stool")])
    s.apply_live((list(state.values()), None))
    assert r.v.index.ntotal == n and s.unknown(["gone", "elsewhere"]) == 2
    latest = [x.item_id for x in r.recommend(RecommendRequest(history=[], k=10, order="latest")).items]
    assert len(latest) == 10 and "gone" not in latest
    # deleted, then PUT anew with the same text (its row reused): /latest puts it first again
    newest = lambda: [x.item_id for x in r.recommend(RecommendRequest(history=[], k=2, order="latest")).items]  # noqa: E731
    s.apply_live(([LiveItem("again-x", {"title": "zebra coat"}, True, 5e9, 5e9, 2101),
                   LiveItem("again-y", {"title": "lime hat"}, True, 6e9, 6e9, 2102)], None))
    assert newest() == ["again-y", "again-x"]
    s.apply_live(([LiveItem("again-x", {}, True, 5e9, 6.5e9, 2103, deleted=True)], None))
    s.apply_live(([LiveItem("again-x", {"title": "zebra coat"}, True, 7e9, 7e9, 2104)], None))
    assert newest() == ["again-x", "again-y"]


def test_a_put_of_an_item_the_job_hid_shows_it_however_often_it_is_sent(serving):
    """The job took ``hidden`` in as a column. A PUT (the item whole, sending no rule) shows the
    item, as the next job's fold reads it; sent again (a feed) or patched with an end of sale
    only, it was hidden again by the version's own rule."""
    import pyarrow as pa

    s0, pub = serving
    vid = artifact.current_version(pub["artifacts"])
    s = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                      artifact.locate(pub["artifacts"], vid))
    r, item = s.retriever, "demo-0005"
    hidden = [i == item for i in r.v.item_ids]
    r.v.items = r.v.items.append_column("hidden", pa.array(hidden))  # as a job that absorbed a PATCH hidden
    row = r.v.item_ids.index(item)
    fields = {c: r.v.items.column(c)[row].as_py() for c in catalog_columns(r.v.items.column_names)
              if c != "hidden"}  # the item as it is: its text kept, its row written in place
    history = next(h for h in pub["histories"] if item not in h)
    listed = lambda: item in [x.item_id for x in r.recommend(RecommendRequest(history=history, k=70)).items]  # noqa: E731
    s.apply_live(([], None))
    assert not listed()  # the version's own rule
    n = r.v.index.ntotal
    for seq, change in ((3001, LiveItem(item, fields, True, 1.0, 1.0, 3001)),
                        (3002, LiveItem(item, fields, True, 1.0, 2.0, 3002)),  # the feed sends it again
                        (3003, LiveItem(item, {**fields, "available_until": 4e9}, True, 1.0, 3.0, 3003))):
        s.apply_live(([change], None))
        assert listed(), seq
    assert r.v.index.ntotal == n  # the published row itself, in place


def test_a_live_item_the_template_renders_empty_is_embedded_from_its_catalog_text_as_the_job_does(serving):
    """A template of grounded fields only (a new item has none until the next job) embedded
    every live item from "": all at one vector, none found by its title."""
    s0, pub = serving
    vid = artifact.current_version(pub["artifacts"])
    s = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                      artifact.locate(pub["artifacts"], vid))
    r = s.retriever
    r.v.manifest.text_template = "{vlm_colour}"  # none of a live item's columns
    assert "title" in r.v.manifest.catalog_text_columns
    computed = s.apply_live(([_live("tpl-1", 4001, title="walrus umbrella"), _live("tpl-2", 4002, title="otter boots")],
                             None))
    want = r.encoder.encode([item_text("{vlm_colour}", {"title": t}, ["title"]) for t in ("walrus umbrella", "otter boots")])
    assert np.allclose(computed["tpl-1"], want[0], atol=1e-5) and not np.allclose(want[0], want[1], atol=1e-2)
    assert r.search("walrus umbrella", k=3).items[0].item_id == "tpl-1"


def test_a_live_item_with_an_image_and_no_text_is_in_no_answer_until_it_has_text(serving):
    """Its text renders empty until the next job grounds the image: embedded from "", every
    such item sat at one vector, shown to everyone. It is kept (GET shows it, not shown) and
    a text given later makes it an item like any other."""
    s0, pub = serving
    vid = artifact.current_version(pub["artifacts"])
    s = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                      artifact.locate(pub["artifacts"], vid))
    r = s.retriever
    s.apply_live(([_live("pic-1", 5001, image="pic-1.jpg"), _live("pic-2", 5002, image="pic-2.jpg")], None))
    listed = lambda q: [x.item_id for x in r.recommend(RecommendRequest(history=[], text=q, k=70)).items]  # noqa: E731
    assert not {"pic-1", "pic-2"} & set(listed("a red striped dress"))
    assert s.item("pic-1")["shown"] is False
    s.apply_live(([LiveItem("pic-1", {"image": "pic-1.jpg", "hidden": False}, False, None, 5003.0, 5003)], None))
    assert s.item("pic-1")["shown"] is False  # a rule cannot show it: it has no text yet
    s.apply_live(([LiveItem("pic-1", {"image": "pic-1.jpg", "title": "walrus raincoat"}, True, 5001.0, 5004.0, 5004)],
                  None))
    assert s.item("pic-1")["shown"] is True and listed("walrus raincoat")[0] == "pic-1"


def test_an_item_the_job_hid_stays_hidden_through_a_text_patch_and_then_an_end_of_sale(serving):
    """A patch of its title appends a re-embedded row (still hidden: the version's rule); an
    end of sale patched after it read the version's rules at the new row, found none, and
    showed the item nobody had shown again."""
    import pyarrow as pa

    s0, pub = serving
    vid = artifact.current_version(pub["artifacts"])
    s = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                      artifact.locate(pub["artifacts"], vid))
    r, item = s.retriever, "demo-0006"
    r.v.items = r.v.items.append_column("hidden", pa.array([i == item for i in r.v.item_ids]))
    history = next(h for h in pub["histories"] if item not in h)
    listed = lambda: item in [x.item_id for x in r.recommend(RecommendRequest(history=history, k=70)).items]  # noqa: E731
    s.apply_live(([], None))
    n = r.v.index.ntotal
    patched = {"title": "a zebra striped raincoat"}  # each state as the store's changes fold into it
    s.apply_live(([LiveItem(item, patched, False, None, 1.0, 3101)], None))
    assert r.v.index.ntotal == n + 1 and not listed()  # re-embedded, still the version's rule
    s.apply_live(([LiveItem(item, {**patched, "available_until": 4e9}, False, None, 2.0, 3102)], None))
    assert r.v.index.ntotal == n + 1 and not listed()  # a rule only: in place, and still hidden
    s.apply_live(([LiveItem(item, {**patched, "available_until": 4e9, "hidden": False}, False, None, 3.0, 3103)],
                  None))
    assert listed()  # shown again by hand


def test_a_change_that_keeps_the_text_is_written_over_its_row_in_place(serving):
    """A patch of a column the template does not embed (a price, a stock; here ``pattern``) on a
    published item and on a live one: no new row, nothing removed, the new value served (the
    item view, filters); a change of the text still appends a re-embedded row."""
    s, pub = serving
    r = s.retriever
    template = r.v.manifest.text_template
    assert "pattern" in r.v.items.column_names and "{pattern}" not in template
    published = pub["histories"][2][-1]
    s.apply_live(([_live("patchy", 2000, title="quokka kettle", description="A kettle.", pattern="plain")], None))
    n, removed, vector = r.v.index.ntotal, set(r.live.removed), r.v.vectors[r.v.row_of["patchy"]].copy()
    rows = {i: r.v.row_of[i] for i in (published, "patchy")}
    kettle = {"title": "quokka kettle", "description": "A kettle."}  # a live item's state holds all its fields
    s.apply_live(([LiveItem(published, {"pattern": "zebra-striped"}, False, None, 2001.0, 2001),
                   LiveItem("patchy", {**kettle, "pattern": "zebra-striped"}, True, 2000.0, 2002.0, 2002)], None))
    assert r.v.index.ntotal == n and set(r.live.removed) == removed
    assert {i: r.v.row_of[i] for i in rows} == rows and np.array_equal(r.v.vectors[rows["patchy"]], vector)
    assert s.item(published)["item"]["pattern"] == "zebra-striped" == s.item("patchy")["item"]["pattern"]
    found = r.recommend(RecommendRequest(history=pub["histories"][0], k=70, filters={"pattern": "zebra-striped"}))
    assert {x.item_id for x in found.items} <= {published, "patchy"} and found.items
    s.apply_live(([LiveItem("patchy", {**kettle, "title": "quokka teapot", "pattern": "zebra-striped"}, True, 2000.0,
                            2003.0, 2003)], None))
    assert r.v.index.ntotal == n + 1 and rows["patchy"] in r.live.removed
    assert s.item("patchy")["item"]["pattern"] == "zebra-striped"  # the patch is kept by the new row


def test_hiding_showing_and_expiring_change_rules_in_place_without_new_rows(serving):
    s, pub = serving
    r = s.retriever
    item = pub["histories"][1][0]
    history = next(h for h in pub["histories"] if item not in h)
    n = r.v.index.ntotal
    seq = 1000
    for fields in ({"hidden": True}, {"hidden": False}, {"available_until": 4e9}, {"available_until": 1.0}):
        seq += 1
        s.apply_live(([LiveItem(item, fields, False, None, float(seq), seq)], None))
        listed = item in [x.item_id for x in r.recommend(RecommendRequest(history=history, k=70)).items]
        assert listed == (fields.get("hidden") is False or fields.get("available_until") == 4e9), fields
    assert r.v.index.ntotal == n  # no row was added for a change of rules only
    queued = len(r.live._expiring)
    for _ in range(50):  # a feed sending the same end again and again queues it once
        seq += 1
        s.apply_live(([LiveItem(item, {"available_until": 4e9}, False, None, float(seq), seq)], None))
    assert len(r.live._expiring) <= queued + 1


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, tiny_vlm):
    """A hybrid version (a dense catalog's purchases) in which a dozen catalog items were never
    bought: their collaborative vectors come from their content."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from groundrec.offline.config import load_job_config
    from groundrec.offline.dev.dense_catalog import make_dense_data
    from groundrec.offline.job import run_job

    root = tmp_path_factory.mktemp("live-hybrid")
    paths = make_dense_data(root / "data", n_items=200, n_users=150, per_user=30, seed=2)
    table = pq.read_table(paths["interactions"])
    cold = sorted(set(table.column("item_id").to_pylist()))[:12]
    pq.write_table(table.filter(pc.invert(pc.is_in(table["item_id"], pa.array(cold)))), root / "bought.parquet")
    overrides = {"catalog.path": str(paths["catalog"]), "out": str(root / "artifacts"),
                 "interactions.path": str(root / "bought.parquet"), "catalog.text_columns": ["title"],
                 "encoder.template": "{title}", "run.runner": "local", "export.int8": False,
                 "thumbnails.enabled": False, "vlm.model": str(tiny_vlm()), "collab.weight": [1.0]}
    version = run_job(load_job_config(None, overrides), progress=False).version
    s = build_serving(ServeConfig(artifacts=root / "artifacts", events="none", compute="thread"), version,
                      artifact.locate(root / "artifacts", version))
    return s, cold


def test_a_live_item_gets_the_collaborative_vectors_the_catalog_gave_the_same_unbought_item(hybrid):
    """A live item was given zero collaborative vectors: scored (and read by the sequence
    encoder) unlike the same item in the catalog, which the job maps from its content."""
    s, cold = hybrid
    v = s.retriever.v
    assert s.retriever.hybrid and v.collab_content_map is not None
    row = v.row_of[cold[0]]
    assert np.abs(v.collab_item[row]).sum() > 0  # the catalog's unbought item: vectors from its content
    s.apply_live(([_live("twin", 1, title=v.items.column("title")[row].as_py())], None))
    twin = v.row_of["twin"]
    for part in (v.collab_query, v.collab_item):
        np.testing.assert_allclose(part[twin], part[row], rtol=1e-3, atol=1e-4 * np.abs(part[row]).max())
    np.testing.assert_allclose(v.index.reconstruct(twin), v.index.reconstruct(row), atol=1e-4)


def test_a_changed_unbought_item_is_mapped_from_its_new_text_and_a_bought_one_keeps_its_vectors(hybrid):
    """A changed item kept its old collaborative vectors: for an item nobody bought those were
    made from its old text, which the next job would make again from the new one."""
    s, cold = hybrid
    v = s.retriever.v
    bought = next(i for i in v.item_ids if i not in cold and v.items.column("window_interactions")[
        v.row_of[i]].as_py() > 0)
    before = {i: (v.collab_query[v.row_of[i]].copy(), v.collab_item[v.row_of[i]].copy()) for i in (cold[1], bought)}
    s.apply_live(([LiveItem(cold[1], {"title": "a lantern of brass"}, False, None, 5.0, 5),
                   LiveItem(bought, {"title": "a lantern of brass"}, False, None, 6.0, 6),
                   _live("fresh-twin", 7, title="a lantern of brass")], None))
    twin, changed, kept = (v.row_of[i] for i in ("fresh-twin", cold[1], bought))
    np.testing.assert_allclose(v.collab_item[changed], v.collab_item[twin], rtol=1e-4, atol=1e-6)
    assert not np.allclose(v.collab_item[changed], before[cold[1]][1])  # made again from the new text
    np.testing.assert_array_equal(v.collab_item[kept], before[bought][1])  # what its buyers taught, kept
    np.testing.assert_array_equal(v.collab_query[kept], before[bought][0])


def test_a_rules_only_change_writes_the_version_s_rule_columns_too(serving):
    """A version whose job took hidden and available_until in as columns: hiding, showing or
    ending an item changed whether answers showed it, not its row, so GET /items and a filter
    on the column read the old rule."""
    import pyarrow as pa

    _, pub = serving
    vid = artifact.current_version(pub["artifacts"])
    s = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid,
                      artifact.locate(pub["artifacts"], vid))
    r = s.retriever
    n = r.v.index.ntotal
    r.v.items = r.v.items.append_column("hidden", pa.array([False] * n)).append_column(
        "available_until", pa.array([None] * n, pa.float64()))
    target = r.v.item_ids[3]
    row = r.v.row_of[target]
    column = lambda name: r.v.items.column(name)[row].as_py()  # noqa: E731
    s.apply_live(([LiveItem(target, {"hidden": True}, whole=False, seq=1)], None))
    assert column("hidden") is True and r.v.index.ntotal == n and row in r.live.excluded()
    s.apply_live(([LiveItem(target, {"hidden": False, "available_until": 4e9}, whole=False, seq=2)], None))
    assert (column("hidden"), column("available_until")) == (False, 4e9) and row not in r.live.excluded()
    assert r.v.items.column("hidden").to_pylist().count(True) == 0 and r.v.index.ntotal == n  # no new row
