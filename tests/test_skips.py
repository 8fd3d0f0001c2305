"""offline/skips.py: the skip records as skipped.parquet holds them, and their summaries."""

from __future__ import annotations

import pyarrow.parquet as pq

from groundrec.offline.skips import SCHEMA, Skips


def _skips() -> Skips:
    s = Skips([{"item_id": "a", "stage": "read", "reason": "missing: nope.jpg"}])
    s.add("b", "ground", "truncated: image file is truncated")
    s.add("c", "embed", "empty: nothing to embed")
    s.add("a", "ground", "missing: again")
    return s


def test_a_parquet_roundtrip_keeps_every_record_with_the_schema(tmp_path):
    s = _skips()
    pq.write_table(s.table(), tmp_path / "skipped.parquet")
    back = pq.read_table(tmp_path / "skipped.parquet")
    assert back.schema.equals(SCHEMA)
    assert back.to_pylist() == s.rows and len(s) == 4
    assert Skips(back.to_pylist()).by_kind() == s.by_kind()


def test_an_empty_run_still_writes_the_schema(tmp_path):
    pq.write_table(Skips().table(), tmp_path / "skipped.parquet")
    back = pq.read_table(tmp_path / "skipped.parquet")
    assert back.num_rows == 0 and back.schema.equals(SCHEMA)


def test_summaries():
    s = _skips()
    assert s.by_kind() == {"missing": 2, "truncated": 1, "empty": 1}
    assert s.dropped() == 1  # only the embed stage leaves an item out of the version
    assert s.reasons() == {"a": "ground: missing: again", "b": "ground: truncated: image file is truncated",
                           "c": "embed: empty: nothing to embed"}  # an item's latest problem


def test_the_records_given_are_copied_not_shared():
    rows = [{"item_id": "a", "stage": "read", "reason": "x"}]
    s = Skips(rows)
    s.add("b", "read", "y")
    assert len(rows) == 1 and len(s) == 2
