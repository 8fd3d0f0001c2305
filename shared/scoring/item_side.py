"""A collaborative model's item side as it is scored: ``queries @ item.T`` without the product
where the item side is sparse. An exact (full-rank) model's head item has the unit vector of
its own column (``offline.collab.fit``), so its score is the query's entry in that column: a
gather, not a dot product over thousands of zeros. Zero rows (a live item with no
collaborative part) score 0; every other row (content-mapped, or a factorised model's) is
scored by one product. The job's validation, ``groundrec eval`` and the service all score
the collaborative part through here (``ItemSide.scores``), so they agree by construction."""

from __future__ import annotations

import numpy as np


class ItemSide:
    """The item-side vectors (items x rank) of a collaborative model, split by kind."""

    def __init__(self, item: np.ndarray):
        item = np.asarray(item, dtype=np.float32)
        self.n_items, self.rank = item.shape
        nonzero = np.count_nonzero(item, axis=1)
        unit = (nonzero == 1) & (item.max(axis=1, initial=0.0) == 1.0)
        self.unit_rows = np.flatnonzero(unit)  # row r scores the query's entry unit_cols[r]
        self.unit_cols = item[self.unit_rows].argmax(axis=1)
        self.dense_rows = np.flatnonzero(~unit & (nonzero > 0))
        self.all_dense = len(self.dense_rows) == self.n_items
        self.dense_t = np.ascontiguousarray(item[self.dense_rows].T)  # rank x dense rows

    @property
    def sparse(self) -> bool:
        """Whether some rows are gathered (an exact model): scoring apart from the content then pays."""
        return len(self.unit_rows) > 0

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """``queries @ item.T`` (m x items, float32): the gathered entries, the dense rows'
        product, zeros elsewhere."""
        queries = np.asarray(queries, dtype=np.float32)
        if self.all_dense:
            return queries @ self.dense_t
        out = np.zeros((len(queries), self.n_items), np.float32)
        if len(self.unit_rows):
            out[:, self.unit_rows] = queries[:, self.unit_cols]
        if len(self.dense_rows):
            out[:, self.dense_rows] = queries @ self.dense_t
        return out

    def extended(self, item: np.ndarray) -> "ItemSide":
        """This item side with ``item``'s rows appended (live items: a copy of a published row's
        vectors, or zeros for a new item)."""
        more = ItemSide(item)
        out = ItemSide.__new__(ItemSide)
        out.n_items, out.rank = self.n_items + more.n_items, self.rank
        out.unit_rows = np.concatenate([self.unit_rows, more.unit_rows + self.n_items])
        out.unit_cols = np.concatenate([self.unit_cols, more.unit_cols])
        out.dense_rows = np.concatenate([self.dense_rows, more.dense_rows + self.n_items])
        out.all_dense = len(out.dense_rows) == out.n_items
        out.dense_t = (np.ascontiguousarray(np.hstack([self.dense_t, more.dense_t])) if more.dense_t.shape[1]
                       else self.dense_t)
        return out
