"""The index as the searcher reads it (online/search.py): a flat index scored exactly, FAISS
candidates from a graph index, a selective filter scored exactly over the items it passes,
each against a naive ranking of the same vectors."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from groundrec.online.search import IndexSearch
from groundrec.online.version import LoadedVersion
from groundrec.shared.artifact import Manifest
from groundrec.shared.scoring.searcher import Ask

RNG = np.random.default_rng(3)
VECTORS = RNG.normal(size=(300, 16)).astype(np.float32)
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)


def _version(index) -> LoadedVersion:
    ids = [f"i{n}" for n in range(len(VECTORS))]
    manifest = Manifest(version="t", created_at="now", code_version="t", models={}, prompt={}, text_template="",
                        dim=16, counts={"indexed": len(ids)}, index={}, timings_s={})
    index.add(VECTORS)
    return LoadedVersion(Path("."), manifest, index, pa.table({"item_id": ids}), VECTORS, ids,
                         {i: n for n, i in enumerate(ids)})


def naive(profile, k, seen=(), allowed=None):
    scores = (VECTORS.astype(np.float64) @ profile.astype(np.float64).T).max(axis=1)
    rows = [r for r in range(len(VECTORS)) if r not in seen and (allowed is None or allowed[r])]
    return sorted(rows, key=lambda r: (-scores[r], r))[:k]


def test_a_flat_index_is_scored_exactly_single_and_batched():
    search = IndexSearch(_version(faiss.IndexFlatIP(16)))
    assert search.flat is not None
    profiles = VECTORS[[5, 17, 42]]
    for p in profiles:
        assert [r for r, _ in search.search(p[None], 10, {5}, None, None)] == naive(p[None], 10, {5})
    lists = search.search_batch(profiles, [Ask(10, {5}), Ask(3, set()), Ask(7, {42, 1})])
    assert [[r for r, _ in ranked] for ranked in lists] == [naive(profiles[0][None], 10, {5}),
                                                            naive(profiles[1][None], 3), naive(profiles[2][None], 7, {42, 1})]
    two = VECTORS[[5, 200]]  # a multi-interest profile: each item by its best row
    assert [r for r, _ in search.search(two, 8, set(), None, None)] == naive(two, 8)


def test_a_graph_index_asks_faiss_for_candidates_and_a_selective_filter_is_scored_exactly():
    graph = faiss.IndexHNSWFlat(16, 16, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efSearch = 256  # 300 items: the graph search is exact here
    search = IndexSearch(_version(graph), exact_subset_max=50)
    assert search.flat is None
    p = VECTORS[7][None]
    assert [r for r, _ in search.search(p, 10, {7}, None, None)] == naive(p, 10, {7})
    few = np.zeros(len(VECTORS), bool)
    few[::10] = True  # 30 items pass: under exact_subset_max, scored exactly
    assert [r for r, _ in search.search(p, 5, set(), few, None)] == naive(p, 5, allowed=few)
    [ranked] = search.search_batch(p, [Ask(6, {7})])
    assert [r for r, _ in ranked] == naive(p, 6, {7})


def test_an_approximate_list_short_of_k_is_fetched_wider_then_scored_exactly():
    """An IVF probing few lists, a selector passing few items on a graph and max_per each left
    fewer than k candidates: the list came back short though enough allowed items exist."""
    from functools import partial

    from groundrec.shared.scoring import ranking

    quantizer = faiss.IndexFlatIP(16)
    ivf = faiss.IndexIVFFlat(quantizer, 16, 30, faiss.METRIC_INNER_PRODUCT)
    ivf.train(VECTORS)
    ivf.nprobe = 1  # about 10 items a list: a fetch of 40 comes back mostly -1
    search = IndexSearch(_version(ivf), exact_subset_max=100)  # 300 items: at most four times it
    p = VECTORS[11][None]
    assert len(search.search(p, 40, set(), None, None)) == 40
    [ranked] = search.search_batch(p, [Ask(40, set())])
    assert len(ranked) == 40
    graph = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efSearch = 16
    search = IndexSearch(_version(graph), exact_subset_max=10)
    some = np.zeros(len(VECTORS), bool)
    some[::12] = True  # 25 pass: above exact_subset_max, through FAISS's selector
    got = search.search(p, 20, set(), some, None)
    assert [r for r, _ in got] == naive(p, 20, allowed=some)  # every one of the 20, in the exact order
    groups = np.arange(len(VECTORS)) // 60  # five groups: max_per 1 can give five items, no more
    pick = partial(ranking.select, groups=[groups], limits=[1], vectors=VECTORS, diversity=0.0)
    assert len(search.search(p, 5, set(), None, None, pick)) == 5


def test_a_pick_that_can_never_fill_k_costs_two_fetches_not_a_scan():
    """max_per over a column of few values on a catalog above exact_subset_max: the list stays
    short after one wider fetch (it scanned the whole catalog on every such request)."""
    from functools import partial

    from groundrec.shared.scoring import ranking

    graph = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    search = IndexSearch(_version(graph), exact_subset_max=50)  # 300 items: above four times it
    fetched = []
    real = search.candidates
    search.candidates = lambda profiles, fetch, allowed=None: fetched.append(fetch) or real(profiles, fetch, allowed)
    groups = np.arange(len(VECTORS)) % 3  # three values: max_per 1 never gives more than three
    pick = partial(ranking.select, groups=[groups], limits=[1])
    got = search.search(VECTORS[2][None], 10, set(), None, None, pick)
    assert len(got) == 3 and len(fetched) == 2  # then short: no exact scan of the catalog
