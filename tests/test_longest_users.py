"""offline/dev/longest_users.py: a real catalog cut to its longest histories, whole."""

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from groundrec.offline.dev.longest_users import longest_users


def _table() -> pa.Table:
    users = ["c"] * 3 + ["a"] * 2 + ["b"] * 2 + ["d"] * 1  # c longest; a and b tie
    return pa.table({"user_id": users, "item_id": [f"i{n}" for n in range(8)], "quantity": list(range(8))})


def test_the_longest_histories_are_kept_whole_ties_to_the_smaller_id():
    cut = longest_users(_table(), 2)
    assert cut.column("user_id").to_pylist() == ["c", "c", "c", "a", "a"]
    assert cut.column("item_id").to_pylist() == ["i0", "i1", "i2", "i3", "i4"]  # rows unchanged, in order
    assert longest_users(_table(), 10).num_rows == 8


def test_the_command_writes_the_cut(tmp_path):
    pq.write_table(_table(), tmp_path / "in.parquet")
    out = subprocess.run([sys.executable, "-m", "groundrec.offline.dev.longest_users", str(tmp_path / "in.parquet"),
                          str(tmp_path / "R"), "--users", "3"], capture_output=True, text=True, check=True)
    assert "7 interactions, 3 users" in out.stdout
    assert sorted(set(pq.read_table(tmp_path / "R" / "interactions.parquet").column("user_id").to_pylist())) == \
        ["a", "b", "c"]
