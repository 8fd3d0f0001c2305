"""Interactions' times (offline/interactions.py): every form a table may hold them in becomes
whole seconds since the epoch, and what is not a time is refused naming the column, before the
job's heavy stages run."""

from __future__ import annotations

import pyarrow as pa
import pytest

from groundrec.offline.interactions import InteractionsConfig, load_interactions, seconds
from groundrec.shared.errors import UserError

DAY = 1704067200  # 2024-01-01T00:00:00Z


def col(values, kind=None) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, kind)])


@pytest.mark.parametrize("values, kind", [
    ([DAY, DAY + 86400], pa.int64()),
    ([DAY + 0.9, DAY + 86400.2], pa.float64()),  # sub-second parts truncated
    ([str(DAY), f"{DAY + 86400}.5"], None),  # CSV: numbers read as text
    (["2024-01-01T00:00:00Z", "2024-01-02T02:00:00+02:00"], None),  # zoned ISO
    (["2024-01-01 00:00:00", "2024-01-02"], None),  # naive ISO: UTC
    ([DAY * 1_000_000, (DAY + 86400) * 1_000_000], pa.timestamp("us")),
])
def test_every_form_of_a_time_becomes_whole_seconds(values, kind):
    assert seconds(col(values, kind), "t").tolist() == [DAY, DAY + 86400]


@pytest.mark.parametrize("values, says", [
    ([DAY * 1000], "milliseconds"),
    ([DAY, None], r"1 row\(s\) have no time"),
    (["soon"], "neither a timestamp"),
    ([float("nan")], "not finite"),
    ([True], "holds bool"),
])
def test_what_is_not_a_time_is_refused_naming_the_column(values, says):
    with pytest.raises(UserError, match=says) as e:
        seconds(col(values), "interactions x.csv column 'ts'")
    assert "column 'ts'" in str(e.value)


def test_a_csv_of_epoch_seconds_loads(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text(f"user,item,ts\nu1,0108775015,{DAY}\nu2,b,{DAY + 5}\nu2,ghost,{DAY + 9}\n")
    got = load_interactions(InteractionsConfig(path=str(path), user_column="user", item_column="item",
                                               timestamp_column="ts"), {"0108775015": 0, "b": 1})
    assert got.ts.tolist() == [DAY, DAY + 5] and got.items.tolist() == [0, 1] and got.dropped_unknown_items == 1


def test_interactions_that_name_no_catalog_item_stop_the_job_before_any_work(tmp_path):
    """Integer item ids (108775015) against the catalog's text ids (0108775015): every row was
    dropped silently, and the job failed in its learn stage, after the VLM had run."""
    path = tmp_path / "interactions.csv"
    path.write_text(f"user,item,ts\nu1,108775015,{DAY}\nu2,108775016,{DAY + 5}\n")
    cfg = InteractionsConfig(path=str(path), user_column="user", item_column="item", timestamp_column="ts")
    with pytest.raises(UserError, match=r"0 of 2 rows name an item of the catalog .* '?108775015'? is no catalog id "
                                        r"\(catalog ids look like '0108775015'\).*leading zeros"):
        load_interactions(cfg, {"0108775015": 0, "0108775016": 1})
