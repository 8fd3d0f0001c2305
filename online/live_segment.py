"""A flat version's live rows searched apart. The items API appends a row per new or changed
item after the published ones; on a flat index every request would multiply them all (10,000
live rows on H&M: 59% more rows, about 30% of the rate). Past ``live_exact_max`` live rows,
they are held by a small HNSW graph instead: a request scores the published rows exactly (one
matrix product, as before) and asks the graph for the live rows' best ``width`` candidates.

The candidates are scored exactly (their columns of ``items_t``, the same vectors the flat
search reads) and laid into the score matrix at their rows, every other live row at -inf, so
the searcher's rules (seen, exclude, prior, max_per, kept places) read one score vector per
user as they do without live rows. What the graph adds is its recall: a live row it misses is
not in that answer. Live rows removed since (replaced, hidden, deleted, expired) are kept out
of its search by a selector, so they cost no candidate; the user's own seen rows widen it."""

from __future__ import annotations

from typing import Callable

import faiss
import numpy as np

M = 32  # graph neighbours per row
EF_CONSTRUCTION = 80
EF_SEARCH = 64  # the same for every width: a list's n best are the first n of a wider search's


class LiveSegment:
    """The rows of a flat version from ``start`` on, in an HNSW graph (inner product)."""

    def __init__(self, start: int, dim: int, excluded: Callable[[], frozenset], ef_search: int = EF_SEARCH):
        self.start = start
        self.index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.ef_search = ef_search
        self.excluded = excluded  # the rows no answer may hold now (the live overlay's ``excluded``)
        self._key: tuple | None = None
        self._bits = np.zeros(0, np.uint8)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def sync(self, items_t: np.ndarray) -> None:
        """Add the columns of ``items_t`` (dim x rows) past the rows the graph holds."""
        end = items_t.shape[1]
        if end > self.start + self.ntotal:
            self.index.add(np.ascontiguousarray(items_t[:, self.start + self.ntotal:end].T, dtype=np.float32))

    def width(self, base: int, seen) -> int:
        """Candidates to ask for: ``base`` plus the query's own excluded rows (``seen`` holds the
        removed rows too, which the selector leaves out already)."""
        return min(self.ntotal, base + max(0, len(seen) - len(self.excluded())))

    def _params(self) -> faiss.SearchParametersHNSW:
        removed = self.excluded()
        key = (id(removed), len(removed), self.ntotal)
        if key != self._key:  # a new removed set (an apply, an expiry) or new rows: a new bitmap
            alive = np.ones(self.ntotal, bool)
            dead = np.fromiter((r - self.start for r in removed if r >= self.start), np.int64)
            alive[dead[dead < self.ntotal]] = False
            self._bits, self._key = np.packbits(alive, bitorder="little"), key
        params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(self._bits)),
                                            efSearch=self.ef_search)
        params._bits = self._bits  # the buffer lives as long as the search
        return params

    def candidates(self, profiles: np.ndarray, width: int) -> np.ndarray:
        """Each profile row's ``width`` best live rows (catalog rows; -1 where fewer remain)."""
        if width <= 0 or not self.ntotal:
            return np.full((len(profiles), 0), -1, np.int64)
        _, idx = self.index.search(np.ascontiguousarray(profiles, dtype=np.float32), width, params=self._params())
        return np.where(idx >= 0, idx + self.start, -1)

    def score_rows(self, profiles: np.ndarray, items_t: np.ndarray, width: int) -> np.ndarray:
        """A (users x rows) score matrix of single-row profiles: the published rows exact, each
        user's ``width`` best live rows by the graph (scored exactly), the other live rows -inf."""
        out = np.full((len(profiles), items_t.shape[1]), -np.inf, np.float32)
        out[:, :self.start] = profiles @ items_t[:, :self.start]
        rows = self.candidates(profiles, width)
        users, at = np.nonzero(rows >= 0)
        cols = rows[users, at]
        out[users, cols] = np.einsum("ij,ji->i", profiles[users], items_t[:, cols])
        return out

    def score_profile(self, profiles: np.ndarray, items_t: np.ndarray, width: int) -> np.ndarray:
        """One profile's (one or several rows) score per row, best over its rows: the published
        rows exact, the union of its rows' live candidates scored exactly, the others -inf."""
        profiles = np.asarray(profiles, dtype=np.float32)
        out = np.full(items_t.shape[1], -np.inf, np.float32)
        out[:self.start] = (profiles @ items_t[:, :self.start]).max(axis=0)
        cols = np.unique(self.candidates(profiles, width))
        cols = cols[cols >= 0]
        out[cols] = (profiles @ items_t[:, cols]).max(axis=0)
        return out
