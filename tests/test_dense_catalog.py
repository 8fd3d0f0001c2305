"""offline/dev/dense_catalog.py: the planted structure the hybrid's figures rest on: titles
name their topic, users stay within a few topics and bundles, new items only in the last part
of each timeline, one row per event in time order; the same seed, the same data."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from groundrec.offline.dev.dense_catalog import TOPICS, make_dense_data


def test_the_planted_structure_holds(tmp_path):
    paths = make_dense_data(tmp_path / "a", n_items=200, n_users=40, per_user=30, new_share=0.2, seed=1)
    items = pq.read_table(paths["catalog"]).to_pylist()
    inter = pq.read_table(paths["interactions"])
    assert len(items) == 200 and all(r["image"] is None for r in items)  # text only
    topic = {r["item_id"]: r["topic"] for r in items}
    assert all(r["title"].endswith(f" for {r['topic']}") and r["topic"] in TOPICS for r in items)
    users = inter.column("user_id").to_pylist()
    ids = inter.column("item_id").to_pylist()
    ts = inter.column("timestamp").cast("int64").to_numpy()
    assert set(ids) <= set(topic) and len(set(users)) == 40
    by_user: dict[str, list[int]] = {}
    for n, u in enumerate(users):
        by_user.setdefault(u, []).append(n)
    for rows in by_user.values():
        assert np.all(np.diff(ts[rows]) > 0)  # one timestamp per event, in order
        # half the events come from two liked topics: those two hold far more than their share
        counts = sorted(np.unique([topic[ids[n]] for n in rows], return_counts=True)[1])[::-1]
        assert sum(counts[:2]) >= 0.45 * len(rows)
    # new items appear only in the last fifth of a user's timeline
    first_seen = {}
    for u, rows in by_user.items():
        for step, n in enumerate(rows):
            first_seen.setdefault(ids[n], []).append(step / len(rows))
    late_only = [i for i, pos in first_seen.items() if min(pos) >= 0.75]
    assert late_only, "no item is new (bought only late)"


def test_the_same_seed_gives_the_same_data(tmp_path):
    a = make_dense_data(tmp_path / "a", n_items=60, n_users=10, per_user=10, seed=4)
    b = make_dense_data(tmp_path / "b", n_items=60, n_users=10, per_user=10, seed=4)
    c = make_dense_data(tmp_path / "c", n_items=60, n_users=10, per_user=10, seed=5)
    for key in ("catalog", "interactions"):
        assert pq.read_table(a[key]).equals(pq.read_table(b[key]))
    assert not pq.read_table(a["interactions"]).equals(pq.read_table(c["interactions"]))
