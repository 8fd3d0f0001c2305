"""Search strategies over one version's index, each ending in the scoring core's top-k:
exact (one matrix product over the flat index's vectors held transposed), a selective filter
on an approximate index scored exactly over the items it passes, or FAISS with an ID
selector and an over-fetched candidate list. The retriever builds the profiles and priors;
this module only finds the best rows for them."""

from __future__ import annotations

import faiss
import numpy as np

from groundrec.online.version import LoadedVersion
from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.collab import index_rows


class IndexSearch:
    def __init__(self, version: LoadedVersion, overfetch: int = 4, exact_subset_max: int = 20_000,
                 new_rows: np.ndarray | None = None):
        self.v = version
        self.overfetch = overfetch  # candidates per result when a prior or max_per reorders them
        self.exact_subset_max = exact_subset_max  # filters passing fewer items are scored exactly
        self.hybrid = version.collab_query is not None
        index = version.index
        # A flat index is scored by one matrix product against its vectors held transposed
        # (dim x items, contiguous): OpenBLAS multiplies a few profiles by that layout faster
        # than by the index's own items x dim rows (benchmarks/bench_online.py gemm),
        # for one more copy of the matrix (items x dim x 4 bytes).
        self.exact_t = (np.ascontiguousarray(faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)
                                             .reshape(index.ntotal, index.d).T)
                        if isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT
                        else None)
        # The new items (``among``) as an approximate index holds them, built once: for a
        # projected hybrid that is a product per item, too dear to repeat on every request that
        # keeps a place (a flat index scores them with every other item: ``exact_with_new``).
        self.new_rows = new_rows if new_rows is not None else np.zeros(0, np.int64)
        self.new_vectors = self._indexed(self.new_rows) if len(self.new_rows) and self.exact_t is None else None

    def search(self, profiles: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
                prior: np.ndarray | None, pick=None) -> list[tuple[int, float]]:
        if self.exact_t is not None:
            return self._exact(profiles, k, seen, allowed, prior, pick)
        if allowed is not None and allowed.sum() <= self.exact_subset_max:
            return self._subset(profiles, k, seen, np.flatnonzero(allowed), prior, pick)
        n = self.v.index.ntotal
        wide = k * self.overfetch * (4 if pick else 1) if prior is not None or pick else k
        fetch = min(n, wide + len(seen))
        params = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            params = _search_params(self.v.index, faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)))
            params._bits = bits  # keep the buffer alive for the search
        scores, idx = self.v.index.search(np.ascontiguousarray(profiles, dtype=np.float32), fetch, params=params)
        best: dict[int, float] = {}
        for s_row, i_row in zip(scores, idx):  # several interests: merge, best score per item
            for s, i in zip(s_row, i_row):
                if i >= 0 and i not in seen:
                    s = float(s) + (float(prior[i]) if prior is not None else 0.0)
                    if s > best.get(i, -np.inf):
                        best[int(i)] = s
        ranked = sorted(best.items(), key=lambda p: (-p[1], p[0]))
        return pick(ranked, k) if pick else ranked[:k]

    def among(self, profiles: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
              prior: np.ndarray | None) -> list[tuple[int, float]]:
        """The best ``k`` of the new items (those this search was built with), scored exactly."""
        rows = self.new_rows
        vectors = self.new_vectors if self.new_vectors is not None else self._indexed(rows)
        scores = (vectors @ np.asarray(profiles, dtype=np.float32).T).max(axis=1)  # one per new item
        if prior is not None:
            scores = scores + prior[rows]  # as ``_top`` adds it
        if allowed is not None:
            scores[~allowed[rows]] = -np.inf
        if seen:
            scores[np.isin(rows, np.fromiter(seen, np.int64, len(seen)))] = -np.inf
        # rows ascend, so ties broken by position are ties broken by row, as everywhere
        return [(int(rows[at]), score) for at, score in ranking.top_k(scores, k)]

    def _exact(self, profiles: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
                      prior: np.ndarray | None, pick=None) -> list[tuple[int, float]]:
        """Flat index: one matrix product over the transposed copy of the index's vectors.
        Cheaper than FAISS's per-call overhead for a single user, and seen items, filters and the
        popularity prior apply to every item exactly, not to an over-fetched candidate list."""
        scores = (np.asarray(profiles, dtype=np.float32) @ self.exact_t).max(axis=0)
        return self._top(scores, k, seen, allowed, prior, pick)

    def _subset(self, profiles: np.ndarray, k: int, seen: set[int], rows: np.ndarray,
                       prior: np.ndarray | None, pick=None) -> list[tuple[int, float]]:
        """A selective filter on an approximate index: score the few allowed items exactly.
        Graph and IVF searches lose recall when most items are filtered out; this does not."""
        scores = np.full(self.v.index.ntotal, -np.inf, dtype=np.float32)
        scores[rows] = (self._indexed(rows) @ np.asarray(profiles, dtype=np.float32).T).max(axis=1)
        return self._top(scores, k, seen, None, prior, pick)

    def _indexed(self, rows: np.ndarray) -> np.ndarray:
        """Some items' vectors as the index holds them: the content vector, and for a hybrid
        version the weighted item-side collaborative vector beside it, projected when the
        version is (built for these rows only, not kept for the whole catalog)."""
        if not self.hybrid:
            return np.asarray(self.v.vectors[rows])
        return index_rows(self.v.vectors[rows], self.v.collab_weight * self.v.collab_item[rows], self.v.project_item)

    def _top(self, scores: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
             prior: np.ndarray | None, pick=None) -> list[tuple[int, float]]:
        """Top-k rows of a full score vector (modified in place), ties broken by row; with
        ``pick`` (max_per, diversity: ``ranking.select``), the k it takes from a widening head
        of the ranking."""
        return self._ranked(self._final(scores, seen, allowed, prior), k, pick)

    def exact_with_new(self, profiles: np.ndarray, k: int, slots: int, seen: set[int], allowed: np.ndarray | None,
                       prior: np.ndarray | None, pick=None,
                       is_new=()) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """On a flat index, ``search`` and ``among`` (the best ``slots`` new items) from the one
        score vector: every item is scored once for both; the new items are ranked only when
        the list holds fewer than ``slots`` of them (rows in ``is_new``)."""
        scores = self._final((np.asarray(profiles, dtype=np.float32) @ self.exact_t).max(axis=0), seen, allowed, prior)
        ranked = self._ranked(scores, k, pick)
        if not ranking.missing_new(ranked, slots, is_new):
            return ranked, []
        return ranked, [(int(self.new_rows[at]), s) for at, s in ranking.top_k(scores[self.new_rows], slots)]

    @staticmethod
    def _final(scores: np.ndarray, seen: set[int], allowed: np.ndarray | None, prior: np.ndarray | None) -> np.ndarray:
        """A full score vector as ranked: the prior added, filtered-out and seen items at -inf."""
        if prior is not None:
            scores = scores + prior
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        return ranking.exclude(scores, seen)

    @staticmethod
    def _ranked(scores: np.ndarray, k: int, pick=None) -> list[tuple[int, float]]:
        if not pick:
            return ranking.top_k(scores, k)
        wide = 4 * k
        while True:
            head = ranking.top_k(scores, wide)
            picked = pick(head, k)
            if len(picked) == k or len(head) < wide:
                return picked
            wide *= 4


def _search_params(index: faiss.Index, selector) -> faiss.SearchParameters:
    """Search parameters carrying a selector and the index's own tuned knob (a selector
    given with plain ``SearchParameters`` would reset nprobe/efSearch to their defaults)."""
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)
