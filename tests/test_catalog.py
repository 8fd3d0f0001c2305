import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from groundrec.offline.catalog import CatalogError, load_catalog, resolve_image, text_only
from groundrec.shared.config import CatalogConfig


def _write(tmp_path, rows, name="c.parquet"):
    p = tmp_path / name
    pq.write_table(pa.Table.from_pylist(rows), p)
    return p


def test_loads_and_resolves_images(tmp_path):
    p = _write(tmp_path, [{"item_id": 1, "image": "a.jpg", "title": "t", "description": None},
                          {"item_id": 2, "image": "/abs/b.jpg", "title": "u", "description": "d"},
                          {"item_id": 3, "image": "s3://bucket/c.jpg", "title": "v", "description": "e"}])
    t = load_catalog(CatalogConfig(path=p, images_root=tmp_path / "imgs"))
    assert t.column("item_id").to_pylist() == ["1", "2", "3"]  # ids become strings
    assert t.column("image_uri").to_pylist() == [str(tmp_path / "imgs" / "a.jpg"), "/abs/b.jpg", "s3://bucket/c.jpg"]
    assert t.column("description").to_pylist()[0] == ""  # null text -> empty


def test_empty_catalog(tmp_path):
    p = _write(tmp_path, [{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d"}])
    pq.write_table(pq.read_table(p).slice(0, 0), p)
    with pytest.raises(CatalogError, match="empty"):
        load_catalog(CatalogConfig(path=p))


def test_duplicate_ids(tmp_path):
    p = _write(tmp_path, [{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d"}] * 2)
    with pytest.raises(CatalogError, match="duplicate 'item_id'.*'a'"):
        load_catalog(CatalogConfig(path=p))


def test_missing_column_names_it_and_lists_what_exists(tmp_path):
    p = _write(tmp_path, [{"item_id": "a", "picture": "a.jpg", "title": "t", "description": "d"}])
    with pytest.raises(CatalogError, match=r"lacks column\(s\) \['summary'\].*picture"):
        load_catalog(CatalogConfig(path=p, text_columns=["title", "summary"]))
    # no image column: a text-only catalog, with a note that names the column and the candidates
    items = load_catalog(CatalogConfig(path=p))
    assert items.column("image_uri").null_count == 1
    assert "no image column 'image'" in text_only(items, CatalogConfig(path=p)) and "picture" in text_only(
        items, CatalogConfig(path=p))
    named = CatalogConfig(path=p, image_column="picture")
    assert load_catalog(named).column("image_uri").null_count == 0 and text_only(load_catalog(named), named) is None


def test_null_id(tmp_path):
    p = _write(tmp_path, [{"item_id": None, "image": "a.jpg", "title": "t", "description": "d"},
                          {"item_id": "b", "image": "b.jpg", "title": "t", "description": "d"}])
    with pytest.raises(CatalogError, match="have no 'item_id'"):
        load_catalog(CatalogConfig(path=p))


def test_an_empty_id_cell_is_refused_naming_its_row(tmp_path):
    """A CSV's empty id cell reads as "", not null: its grounding was stored as no id's and the
    item published ungrounded with no reason, then grounded from the cache on the next run."""
    p = tmp_path / "c.csv"
    p.write_text("item_id,title\na,Strap top\n,Dress\n  ,Skirt\n")
    with pytest.raises(CatalogError, match=r"2 row\(s\) have an empty 'item_id' \(rows \[1, 2\]"):
        load_catalog(CatalogConfig(path=p, text_columns=["title"]))


def test_csv_keeps_leading_zero_ids(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("sku,img,name\n0108775015,x.jpg,Strap top\n0200000001,y.jpg,Dress\n")
    t = load_catalog(CatalogConfig(path=p, id_column="sku", image_column="img", text_columns=["name"]))
    assert t.column("sku").to_pylist() == ["0108775015", "0200000001"]


def test_jsonl_and_unknown_format(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d"}\n')
    assert load_catalog(CatalogConfig(path=p)).num_rows == 1
    q = tmp_path / "c.xlsx"
    q.write_text("x")
    with pytest.raises(ValueError, match="cannot read"):
        load_catalog(CatalogConfig(path=q))


@pytest.mark.parametrize("column", ["image_uri", "vlm_text", "text", "grounded"])
def test_a_column_the_job_writes_is_refused_naming_it(tmp_path, column):
    p = _write(tmp_path, [{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d", column: "x"}])
    with pytest.raises(CatalogError, match=f"column\\(s\\) \\['{column}'\\] are written by the job"):
        load_catalog(CatalogConfig(path=p))
    hidden = _write(tmp_path, [{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d", "hidden": True}])
    assert load_catalog(CatalogConfig(path=hidden)).column("hidden").to_pylist() == [True]  # a rule, not derived


@pytest.mark.parametrize("name, content, says", [
    ("c.parquet", b"not parquet at all", "as parquet"),
    ("c.csv", b"", "as csv"),
    ("c.csv", b"item_id,title\na,\xff\xfe bad\n", "as csv"),
])
def test_an_unreadable_table_is_a_user_error_naming_it(tmp_path, name, content, says):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot read .*{name} {says}"):
        load_catalog(CatalogConfig(path=p))


def test_blank_image_resolves_to_none(tmp_path):
    assert resolve_image("  ", tmp_path) is None and resolve_image(None, tmp_path) is None


def test_images_under_an_object_store_root_keep_their_uri(tmp_path):
    """images_root may be an fsspec URI (a Path made gs://b/x into gs:/b/x, so every image was
    "not found" and the version published ungrounded)."""
    assert resolve_image("shoes/a.jpg", "gs://bucket/images/") == "gs://bucket/images/shoes/a.jpg"
    assert resolve_image("s3://other/b.jpg", "gs://bucket/images") == "s3://other/b.jpg"
    assert resolve_image("a.jpg", str(tmp_path)) == str(tmp_path / "a.jpg")
    from typer.testing import CliRunner

    from groundrec.shared.cli import app

    r = CliRunner().invoke(app, ["offline", "run", "--catalog", str(tmp_path / "none.parquet"), "--out",
                                 str(tmp_path / "o"), "--images-root", "gs://bucket/images"])
    assert "gs:/bucket" not in r.output  # the URI reaches the job as given (it fails on the missing catalog)
    assert r.exit_code == 2 and "none.parquet" in r.output and "Traceback" not in r.output


def test_a_list_text_column_is_refused_naming_it_and_what_to_do(tmp_path):
    """A JSONL catalog's tags as a list, named among the text columns: Arrow's own error (a
    traceback, exit 1) deep in the read stage."""
    p = _write(tmp_path, [{"item_id": "a", "image": "a.jpg", "title": "t", "description": "d", "tags": ["red", "sale"]}])
    with pytest.raises(CatalogError, match=r"column\(s\) \['tags'\] hold lists or records.*join a list"):
        load_catalog(CatalogConfig(path=p, text_columns=["title", "tags"]))
    assert load_catalog(CatalogConfig(path=p)).column("tags").to_pylist() == [["red", "sale"]]  # not named: kept


def test_the_catalogs_own_hidden_and_available_until_are_read_as_the_service_reads_them(tmp_path):
    """A CSV's ``hidden`` and ``available_until`` are texts: read as they are, every item with a
    date would be hidden by the service. They become booleans and seconds since the epoch
    (an ISO date as UTC midnight, an offset honoured, a blank no rule), as the items API reads a
    PATCH's; a value that is neither is refused, naming the column and the value."""
    from groundrec.shared.live_items import shown

    p = tmp_path / "c.csv"
    p.write_text("item_id,title,hidden,available_until\n"
                 "a,Dress,false,2030-01-01\nb,Top,TRUE,\nc,Skirt,0,2030-01-01T00:00:00+01:00\nd,Coat,,1e9\n")
    t = load_catalog(CatalogConfig(path=p, text_columns=["title"]))
    assert t.schema.field("hidden").type == pa.bool_() and t.schema.field("available_until").type == pa.float64()
    assert t.column("hidden").to_pylist() == [False, True, False, None]
    assert t.column("available_until").to_pylist() == [1893456000.0, None, 1893456000.0 - 3600, 1e9]
    now = 1.7e9  # 2023: a and c are on sale until 2030, b is hidden, d ended in 2001
    assert [shown(row, now) for row in t.select(["hidden", "available_until"]).to_pylist()] == [
        True, False, True, False]
    import datetime as dt

    typed = _write(tmp_path, [{"item_id": "a", "title": "x", "hidden": 1,
                               "available_until": dt.datetime(2030, 1, 1)}])  # a naive time: UTC
    assert load_catalog(CatalogConfig(path=typed, text_columns=["title"])).to_pylist()[0]["available_until"] == 1893456000.0
    nan = _write(tmp_path, [{"item_id": "a", "title": "x", "hidden": 1.0}, {"item_id": "b", "title": "y",
                                                                          "hidden": float("nan")}], name="nan.parquet")
    assert load_catalog(CatalogConfig(path=nan, text_columns=["title"])).column("hidden").to_pylist() == [True, None]
    year = tmp_path / "year.csv"
    year.write_text("item_id,title,available_until\na,Dress,2030\n")
    with pytest.raises(CatalogError, match="'2030' looks like a year"):
        load_catalog(CatalogConfig(path=year, text_columns=["title"]))
    for column, value in [("hidden", "maybe"), ("hidden", 2), ("available_until", "soon")]:
        bad = _write(tmp_path, [{"item_id": "a", "title": "x", column: value}], name=f"bad_{column}.parquet")
        with pytest.raises(CatalogError, match=f"column '{column}'.*{value!r}"):
            load_catalog(CatalogConfig(path=bad, text_columns=["title"]))
