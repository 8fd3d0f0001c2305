"""A flat version's live rows searched apart (online/live_segment.py): the published rows
scored exactly, the live rows' candidates from the graph scored exactly and laid at their rows,
removed live rows never candidates, the width a query needs. Served end to end in
tests/test_live_items.py (its ``flat-segment`` version)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from groundrec.online.live_segment import LiveSegment


def _unit(rng, n, dim=32):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def one_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the graph built the same on every run
    yield
    faiss.omp_set_num_threads(before)


def _segment(published=200, live=300, removed=frozenset(), seed=0):
    rng = np.random.default_rng(seed)
    items_t = np.ascontiguousarray(_unit(rng, published + live).T)
    state = {"removed": removed}
    seg = LiveSegment(published, items_t.shape[0], lambda: state["removed"])
    seg.sync(items_t[:, :published + live // 2])  # rows come in applies
    seg.sync(items_t)
    return seg, items_t, state, rng


def test_published_rows_are_exact_and_live_rows_the_graphs_candidates_scored_exactly():
    seg, items_t, _, rng = _segment()
    assert seg.ntotal == 300
    profiles = _unit(rng, 5)
    exact = profiles @ items_t
    few = seg.score_rows(profiles, items_t, width=10)
    assert np.allclose(few[:, :200], exact[:, :200], atol=1e-5)
    for user in range(5):
        live = np.flatnonzero(np.isfinite(few[user, 200:])) + 200
        assert len(live) == 10  # its 10 candidates, scored as the exact product scores them; others -inf
        assert np.allclose(few[user, live], exact[user, live], atol=1e-5)
        assert set(live) == set(np.argsort(-exact[user, 200:])[:10] + 200)  # 300 rows: the graph finds the best


def test_a_profile_of_several_rows_takes_each_rows_candidates_and_its_best_row():
    seg, items_t, _, rng = _segment()
    profiles = _unit(rng, 3)
    got = seg.score_profile(profiles, items_t, width=5)
    exact = (profiles @ items_t).max(axis=0)
    assert np.allclose(got[:200], exact[:200], atol=1e-5)
    live = np.flatnonzero(np.isfinite(got[200:])) + 200
    best_each = {int(c) + 200 for row in profiles for c in np.argsort(-(row @ items_t[:, 200:]))[:5]}
    assert set(live) == best_each and np.allclose(got[live], exact[live], atol=1e-5)


def test_removed_live_rows_are_never_candidates_and_cost_no_width():
    seg, items_t, state, rng = _segment()
    profiles = _unit(rng, 4)
    best = np.argsort(-(profiles @ items_t[:, 200:]), axis=1)[:, :10] + 200
    state["removed"] = frozenset(int(r) for r in best.ravel()) | {3, 7}  # published rows removed too
    rows = seg.candidates(profiles, 10)
    assert rows.shape == (4, 10) and (rows >= 200).all()
    assert not set(rows.ravel()) & state["removed"]  # a new removed set is read at the next search
    mine = next(r for r in range(200, 500) if r not in state["removed"])
    seen = set(state["removed"]) | {mine, 5}  # the query's own two rows on top of the removed ones
    assert seg.width(10, seen) == 12 and seg.width(400, seen) == 300
    state["removed"] = frozenset()
    assert set(seg.candidates(profiles, 10).ravel()) == set(best.ravel())


def test_the_graph_finds_most_of_the_best_live_rows_among_many():
    rng = np.random.default_rng(1)
    centres = _unit(rng, 40)
    live = centres[rng.integers(0, 40, 5000)] + 0.3 * _unit(rng, 5000)
    live /= np.linalg.norm(live, axis=1, keepdims=True)
    items_t = np.ascontiguousarray(np.vstack([_unit(rng, 100), live]).T)
    seg = LiveSegment(100, items_t.shape[0], frozenset)
    seg.sync(items_t)
    queries = _unit(rng, 100)
    got = seg.candidates(queries, 10)
    truth = np.argsort(-(queries @ items_t[:, 100:]), axis=1)[:, :10] + 100
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
    assert recall >= 0.9
