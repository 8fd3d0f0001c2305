"""A flat index's exact scores for profile rows (rows x items), the one product every exact
search reads (``search.IndexSearch``, through ``Searcher.scores_of`` and the batch path).

Two forms of the same numbers:

- **dense**: one matrix product with the index's vectors held transposed (dim x items,
  contiguous): OpenBLAS multiplies a few profiles by that layout faster than by the index's
  own items x dim rows (benchmarks/bench_online.py gemm), for one more copy of the matrix.
- **split**, for a hybrid version that is not projected and whose item side is sparse (an
  exact, full-rank model: a head item's item-side vector is the unit vector of its own
  column): the content part's product plus ``weight x ItemSide.scores`` of the collaborative
  part, which is what a profile ``[content, collaborative query]`` times an index row
  ``[content, weight x item-side]`` amounts to, without multiplying the thousands of zeros
  (retail's exact model: 4,042 floats per item for 384 and a gather). Eval and the job's
  validation score the collaborative part through the same ``ItemSide``.

Live items (``online/live``) append columns: the index rows (dense) or the content vectors and
item-side rows (split)."""

from __future__ import annotations

import faiss
import numpy as np

from groundrec.shared.scoring.item_side import ItemSide


def grown(buf: np.ndarray, used: int, extra: int, axis: int = 0) -> np.ndarray:
    """``buf`` with room for ``extra`` more along ``axis``: itself, or a copy (its first ``used``) twice as big."""
    if buf.shape[axis] >= used + extra:
        return buf
    shape = list(buf.shape)
    shape[axis] = max(2 * (used + extra), 1024)
    out = np.empty(shape, buf.dtype)
    index = (slice(None),) * axis + (slice(0, used),)
    out[index] = buf[index]
    return out


class FlatScores:
    """Exact scores against a flat inner-product index (``__call__``: rows x items); ``split``
    False: one product even where the split form applies (what it is measured against)."""

    def __init__(self, version, index: faiss.Index, split: bool = True):
        side = (ItemSide(version.collab_item)
                if split and version.collab_item is not None and version.project_item is None else None)
        self.side = side if side is not None and side.sparse else None  # None: dense
        self.n = index.ntotal
        if self.side is not None:
            self.d, self.weight = version.vectors.shape[1], float(version.collab_weight)
            self.t = np.ascontiguousarray(np.asarray(version.vectors, dtype=np.float32).T)  # content: dim x items
        else:
            self.t = np.ascontiguousarray(faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)
                                          .reshape(index.ntotal, index.d).T)
        self._buf = self.t

    @property
    def split(self) -> bool:
        return self.side is not None

    def __call__(self, profiles: np.ndarray) -> np.ndarray:
        """Every item's score for each profile row (rows x items, float32)."""
        p = np.asarray(profiles, dtype=np.float32)
        if self.side is None:
            return p @ self.t
        out = p[:, :self.d] @ self.t
        collab = self.side.scores(p[:, self.d:])
        collab *= self.weight
        out += collab
        return out

    def append(self, indexed: np.ndarray, content: np.ndarray, item: np.ndarray | None) -> None:
        """Live rows: their index rows (dense), or their content vectors and unweighted
        item-side vectors (split)."""
        rows = content if self.side is not None else indexed
        k = len(rows)
        self._buf = grown(self._buf, self.n, k, axis=1)
        self._buf[:, self.n:self.n + k] = np.asarray(rows, dtype=np.float32).T
        self.t = self._buf[:, :self.n + k]
        if self.side is not None:
            self.side = self.side.extended(item)
        self.n += k
