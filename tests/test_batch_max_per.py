"""max_per in the batch path (issue 33): ``Retriever.recommend_batch`` answers a query with a
max_per (the request's or the server's) in the shared batch search, each answer identical to
``recommend``'s one at a time, on a flat index and on approximate ones (HNSW searched below
the widths a max_per fetches, IVF), over many random users. The catalog is made like H&M's:
each product's colour variants share its title and sit close together."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from groundrec.online.retrieve import Retriever
from groundrec.online.schemas import UserQuery
from groundrec.online.search import IndexSearch
from groundrec.online.version import LoadedVersion
from groundrec.shared.artifact import Manifest

RNG = np.random.default_rng(33)
D = 16
# 600 products of 1-6 variants each, and 6 products of 150 close variants: a head of 4k of
# those is one title, so a flat index must widen it (an approximate one gives a shorter list).
SIZES = [int(n) for n in RNG.integers(1, 7, 600)] + [150] * 6
CENTRES = RNG.normal(size=(len(SIZES), D)).astype(np.float32)
VECTORS = np.concatenate([c + (0.15 if n < 150 else 0.03) * RNG.normal(size=(n, D)).astype(np.float32)
                          for c, n in zip(CENTRES, SIZES)])
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)
TITLES = [f"product {p}" for p, n in enumerate(SIZES) for _ in range(n)]
IDS = [f"i{n}" for n in range(len(VECTORS))]


def _version(index: faiss.Index) -> LoadedVersion:
    manifest = Manifest(version="t", created_at="now", code_version="t", models={}, prompt={}, text_template="",
                        dim=D, counts={"indexed": len(IDS)}, index={}, timings_s={}, id_column="item_id",
                        catalog_text_columns=["title"])
    index.add(VECTORS)
    return LoadedVersion(Path("."), manifest, index, pa.table({"item_id": IDS, "title": TITLES}), VECTORS, IDS,
                         {i: n for n, i in enumerate(IDS)})


def _index(kind: str) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(D)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(D, 4, faiss.METRIC_INNER_PRODUCT)  # a sparse graph: recall varies with ef
        index.hnsw.efConstruction = 16
        index.hnsw.efSearch = 16  # below a max_per's width (4 x 4 x k + seen): those search wider
        return index
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, 16, faiss.METRIC_INNER_PRODUCT)
    index.train(VECTORS)
    index.nprobe = 3
    return index


def _users(n: int) -> list[UserQuery]:
    """Random users: histories within a product or across several, mixed k, a popularity
    prior for some; the server's max_per for most, their own (or none, ``{}``) for others,
    and a few with diversity (which stays one list at a time)."""
    rng = np.random.default_rng(7)
    big = [n for n, t in enumerate(TITLES) if SIZES[int(t.split()[1])] == 150]
    users = []
    for u in range(n):
        pool = big if u % 5 == 0 else range(len(IDS))
        history = [IDS[int(i)] for i in rng.choice(pool, int(rng.integers(1, 9)), replace=False)]
        extra = [{}, {}, {}, {"max_per": {"title": 2}}, {"max_per": {}}, {"popularity_weight": 0.3},
                 {"diversity": 0.3}][u % 7]
        users.append(UserQuery(history=history, k=int(rng.choice([5, 10, 20])), **extra))
    return users


def _calls(fn, *names: str) -> tuple[object, Counter]:
    """``fn()``'s result and how many times each of these functions of IndexSearch ran."""
    codes = {getattr(IndexSearch, n).__code__: n for n in names}
    counted: Counter = Counter()

    def profile(frame, event, _arg):
        if event == "call" and frame.f_code in codes:
            counted[codes[frame.f_code]] += 1
    sys.setprofile(profile)
    try:
        return fn(), counted
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_max_per_batched_gives_the_one_at_a_time_answers(kind):
    r = Retriever(_version(_index(kind)), popularity={IDS[n]: float(n % 13) for n in range(0, len(IDS), 3)},
                  max_per={"title": 1})
    assert (r.flat is not None) == (kind == "flat")
    users = _users(300)
    single = [r.recommend(q) for q in users]
    batched, calls = _calls(lambda: [a for s in range(0, len(users), 32) for a in r.recommend_batch(users[s:s + 32])],
                            "search", "search_batch")
    diverse = sum(1 for q in users if q.diversity)
    assert calls == {"search": diverse, "search_batch": 10}  # only the diversity users one at a time
    for q, a, b in zip(users, single, batched):  # the same items; scores up to the rounding of another product's shape
        assert [x.item_id for x in b.items] == [x.item_id for x in a.items]
        assert [x.score for x in b.items] == pytest.approx([x.score for x in a.items], abs=1e-6)
    # max_per held: one item per title under the server's default, two where the user asked
    for q, a in zip(users, single):
        titles = Counter(TITLES[int(x.item_id[1:])] for x in a.items)
        limit = (q.max_per or {}).get("title", 1) if q.max_per != {} else None
        assert limit is None or max(titles.values()) <= limit
    if kind == "flat":  # exact: every list is full, the big products' users included (widened)
        assert all(len(a.items) == q.k for q, a in zip(users, single))
        unlimited = [a for q, a in zip(users, single) if q.max_per == {}]
        assert any(max(Counter(TITLES[int(x.item_id[1:])] for x in a.items).values()) > 1 for a in unlimited)
