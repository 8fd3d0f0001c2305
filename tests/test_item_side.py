"""A collaborative item side as it is scored (shared/scoring/item_side.py): an exact model's
unit rows gathered, zero rows 0, the rest by a product; equal to ``queries @ item.T``."""

from __future__ import annotations

import numpy as np

from groundrec.shared.scoring.item_side import ItemSide


def _exact_like(rng, n=40, rank=30):
    item = np.zeros((n, rank), np.float32)
    head = rng.permutation(n)[:rank]  # a head item: the unit vector of its own column
    item[head, np.arange(rank)] = 1.0
    rest = np.setdiff1d(np.arange(n), head)
    item[rest[:6]] = rng.standard_normal((6, rank))  # content-mapped: dense
    item[rest[6]] = 0.0  # nothing known
    item[rest[7], 3] = 0.5  # one nonzero that is not 1: dense, not gathered
    return item


def test_an_exact_models_item_side_scores_as_the_product_without_it():
    rng = np.random.default_rng(0)
    item = _exact_like(rng)
    side = ItemSide(item)
    assert side.sparse and len(side.unit_rows) == 30 and len(side.dense_rows) == 7  # zero rows are neither
    queries = rng.standard_normal((7, 30)).astype(np.float32)
    np.testing.assert_allclose(side.scores(queries), queries @ item.T, rtol=1e-5, atol=1e-6)


def test_a_factorised_item_side_is_one_product():
    rng = np.random.default_rng(1)
    item = rng.standard_normal((25, 8)).astype(np.float32)
    side = ItemSide(item)
    assert not side.sparse and side.all_dense
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(side.scores(queries), queries @ item.T, rtol=1e-5, atol=1e-6)


def test_rows_appended_score_as_the_whole_matrix_would():
    rng = np.random.default_rng(2)
    item = _exact_like(rng)
    more = np.vstack([item[[0, 5]], np.zeros((2, 30), np.float32), rng.standard_normal((1, 30)).astype(np.float32)])
    side = ItemSide(item).extended(more)  # live rows: copies of published rows, new items (zeros), a dense one
    whole = np.vstack([item, more])
    assert side.n_items == 45 and side.sparse
    queries = rng.standard_normal((4, 30)).astype(np.float32)
    np.testing.assert_allclose(side.scores(queries), queries @ whole.T, rtol=1e-5, atol=1e-6)
    assert np.array_equal(side.unit_rows, ItemSide(whole).unit_rows)
