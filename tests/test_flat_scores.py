"""A flat index's exact scores (online/flat_scores.py): one product with the index rows, or
for an unprojected exact hybrid the content product plus the gathered collaborative part: the
same scores either way, before and after live rows are appended. Served end to end in
tests/test_hybrid.py (its ``exact`` version against eval)."""

from __future__ import annotations

from types import SimpleNamespace

import faiss
import numpy as np

from groundrec.online.flat_scores import FlatScores, grown
from groundrec.shared.scoring.collab import hybrid_queries, index_rows


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _version(item, content, weight=2.5):
    index = faiss.IndexFlatIP(content.shape[1] + item.shape[1])
    index.add(index_rows(content, weight * item, None))
    return SimpleNamespace(vectors=content, collab_item=item, project_item=None, collab_weight=weight), index


def test_an_exact_hybrid_is_scored_split_as_its_index_rows_score_it():
    rng = np.random.default_rng(0)
    n, d, rank = 50, 16, 40
    item = np.zeros((n, rank), np.float32)
    item[np.arange(rank), np.arange(rank)] = 1.0  # the head: unit vectors
    item[rank:rank + 8] = rng.standard_normal((8, rank))  # content-mapped rows; two rows stay zero
    content = _unit(rng, n, d)
    version, index = _version(item, content)
    flat = FlatScores(version, index)
    assert flat.split and flat.t.shape == (d, n)  # the content only: not the (d + rank)-wide rows
    profiles = hybrid_queries(_unit(rng, 6, d), rng.standard_normal((6, rank)).astype(np.float32), None)
    held = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    np.testing.assert_allclose(flat(profiles), profiles @ held.T, rtol=1e-5, atol=1e-5)

    # live rows: a changed head item (its unit row copied), a new item (zeros), a dense one
    new_item = np.vstack([item[[3]], np.zeros((1, rank), np.float32), item[[rank + 1]]])
    new_content = _unit(rng, 3, d)
    indexed = index_rows(new_content, version.collab_weight * new_item, None)
    flat.append(indexed, new_content, new_item)
    whole = np.vstack([held, indexed])
    assert flat.n == n + 3 and flat.t.shape == (d, n + 3)
    np.testing.assert_allclose(flat(profiles), profiles @ whole.T, rtol=1e-5, atol=1e-5)


def test_a_factorised_or_content_only_version_is_one_product_with_the_index():
    rng = np.random.default_rng(1)
    content = _unit(rng, 30, 8)
    version, index = _version(rng.standard_normal((30, 6)).astype(np.float32), content)
    flat = FlatScores(version, index)
    assert not flat.split and flat.t.shape == (14, 30)
    profiles = rng.standard_normal((4, 14)).astype(np.float32)
    held = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    np.testing.assert_allclose(flat(profiles), profiles @ held.T, rtol=1e-5, atol=1e-5)
    extra = rng.standard_normal((2, 14)).astype(np.float32)
    flat.append(extra, None, None)
    np.testing.assert_allclose(flat(profiles), profiles @ np.vstack([held, extra]).T, rtol=1e-5, atol=1e-5)
    plain = FlatScores(SimpleNamespace(vectors=content, collab_item=None, project_item=None), _version(
        np.zeros((30, 0), np.float32), content)[1])
    assert not plain.split


def test_grown_keeps_what_was_used_and_doubles_the_room():
    buf = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert grown(buf, 3, 0, axis=1) is buf
    out = grown(buf, 3, 2, axis=1)
    assert out.shape == (2, 1024) and np.array_equal(out[:, :3], buf)
