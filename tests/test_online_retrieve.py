"""Profiles and retrieval on small vectors whose answers can be checked by hand."""

import math
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from groundrec.online.retrieve import NoHistory, Retriever
from groundrec.online.schemas import UserQuery
from groundrec.online.version import LoadedVersion
from groundrec.shared.artifact import Manifest

def _angles(degrees):
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def _version(vectors, **columns) -> LoadedVersion:
    ids = [f"i{n}" for n in range(len(vectors))]
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    items = pa.table({"item_id": ids, **columns})
    manifest = Manifest(version="t", created_at="now", code_version="t", models={}, prompt={}, text_template="",
                        dim=vectors.shape[1], counts={"indexed": len(ids)}, index={}, timings_s={},
                        id_column="item_id", catalog_text_columns=["title"])
    return LoadedVersion(Path("."), manifest, index, items, vectors, ids, {i: n for n, i in enumerate(ids)})


# Items every 10 degrees on the unit circle: i0 at 0°, i1 at 10°, ... i9 at 90°.
CIRCLE = _angles(range(0, 100, 10))


def test_top_k_excludes_seen_and_still_returns_k():
    r = Retriever(_version(CIRCLE))
    res = r.recommend(UserQuery(history=["i0", "i1"], k=3))  # profile at 5°: i2 (15° away), i3, i4
    assert [x.item_id for x in res.items] == ["i2", "i3", "i4"]
    kept = r.recommend(UserQuery(history=["i4", "i5"], k=2, exclude_seen=False))
    assert {x.item_id for x in kept.items} == {"i4", "i5"}


def test_ties_go_to_the_lower_row_single_and_batched():
    # i10 is i3 again: every profile scores the two exactly alike, so only the tie rule orders them.
    r = Retriever(_version(np.concatenate([CIRCLE, CIRCLE[3:4]])))
    for q in (UserQuery(history=["i0"], k=4), UserQuery(history=["i9"], k=7)):
        single = [x.item_id for x in r.recommend(q).items]
        batched = [x.item_id for x in r.recommend_batch([q, UserQuery(history=["i5"], k=2)])[0].items]
        assert single == batched
        assert single.index("i3") + 1 == single.index("i10")  # tied: the lower row first, side by side
    assert [x.item_id for x in r.recommend(UserQuery(history=["i0"], k=4)).items] == ["i1", "i2", "i3", "i10"]


def test_unknown_ids_reported_and_fallbacks():
    r = Retriever(_version(CIRCLE), popularity={"i7": 10, "i2": 5, "nope": 99})
    res = r.recommend(UserQuery(history=["i0", "ghost"], k=2))
    assert res.unknown_ids == ["ghost"] and res.fallback is None
    assert [x.item_id for x in res.items] == ["i1", "i2"]
    pop = r.recommend(UserQuery(history=["ghost"], k=2))
    assert pop.fallback == "popular" and [x.item_id for x in pop.items] == ["i7", "i2"]
    with pytest.raises(NoHistory, match="no known item"):
        Retriever(_version(CIRCLE), fallback="error").recommend(UserQuery(history=[], k=2))


def test_filters_on_item_columns():
    groups = ["Shoes" if n % 2 else "Dress" for n in range(10)]
    r = Retriever(_version(CIRCLE, product_group=groups))
    res = r.recommend(UserQuery(history=["i0"], k=3, filters={"product_group": "Shoes"}))
    assert [x.item_id for x in res.items] == ["i1", "i3", "i5"]
    res = r.recommend(UserQuery(history=["i0"], k=2, filters={"product_group": ["Shoes", "Dress"]}))
    assert [x.item_id for x in res.items] == ["i1", "i2"]
    with pytest.raises(ValueError, match="unknown filter column 'colour'"):
        r.recommend(UserQuery(history=["i0"], k=2, filters={"colour": "red"}))


def test_popularity_prior_reorders_by_hand_computed_score():
    r = Retriever(_version(CIRCLE), popularity={"i3": 100})
    base = r.recommend(UserQuery(history=["i0"], k=3))
    assert [x.item_id for x in base.items] == ["i1", "i2", "i3"]
    blended = r.recommend(UserQuery(history=["i0"], k=3, popularity_weight=0.1))
    # i3: cos 30° + 0.1 * ln(101) = 0.866 + 0.4615 > i1: cos 10° = 0.985
    assert blended.items[0].item_id == "i3"
    assert blended.items[0].score == pytest.approx(math.cos(math.radians(30)) + 0.1 * math.log(101), abs=1e-5)


def _naive(vectors, history, k, log_pop=None, weight=0.0):
    """The reference answer: the mean of the history's vectors, cosine to every unseen item plus
    ``weight x ln(1 + count)``, sorted by score then row."""
    profile = vectors[history].astype(np.float64).mean(axis=0)
    profile /= np.linalg.norm(profile)
    scores = vectors.astype(np.float64) @ profile + (weight * log_pop if log_pop is not None else 0)
    return [(f"i{n}", scores[n]) for n in sorted(set(range(len(vectors))) - set(history), key=lambda n: (-scores[n], n))][:k]


def test_batch_and_one_by_one_both_give_the_reference_answer():
    r = Retriever(_version(CIRCLE), popularity={"i9": 3})
    log_pop = np.log1p(np.array([0] * 9 + [3], dtype=np.float64))
    queries = [(UserQuery(history=["i0"], k=3), [0], 0.0), (UserQuery(history=["i9", "i8"], k=2), [9, 8], 0.0),
               (UserQuery(history=["i5"], k=2, popularity_weight=0.2), [5], 0.2),
               (UserQuery(history=["i2", "i7", "i3"], k=4), [2, 7, 3], 0.0)]
    for answers in (r.recommend_batch([q for q, *_ in queries]), [r.recommend(q) for q, *_ in queries]):
        for got, (q, history, weight) in zip(answers, queries):
            want = _naive(CIRCLE, history, q.k, log_pop, weight)
            assert [x.item_id for x in got.items] == [i for i, _ in want]
            assert [x.score for x in got.items] == pytest.approx([s for _, s in want], abs=1e-6)
    fallback = r.recommend_batch([UserQuery(history=["ghost"], k=2)])[0]
    assert fallback.fallback == "popular" and [x.item_id for x in fallback.items] == ["i9", "i0"]


def test_multi_interest_retrieves_near_each_interest():
    r = Retriever(_version(CIRCLE), n_interests=2)
    res = r.recommend(UserQuery(history=["i0", "i9"], k=2, strategy="multi_interest"))
    assert {x.item_id for x in res.items} == {"i1", "i8"}  # the mean (45°) would give i4, i5


def test_fields_explain_the_recommendation():
    r = Retriever(_version(CIRCLE, title=[f"t{n}" for n in range(10)], vlm_text=[f"v{n}" for n in range(10)]))
    res = r.recommend(UserQuery(history=["i0"], k=1, with_fields=True))
    assert res.items[0].fields == {"title": "t1", "vlm_text": "v1"}


def test_text_search_on_a_published_version(small_catalog, tmp_path, tiny_vlm):
    from groundrec.offline.job import run_job
    from groundrec.online.version import load_version
    from groundrec.offline.config import load_job_config
    from groundrec.shared.onnx_encoder import OnnxTextEncoder

    cfg = load_job_config(None, {"catalog.path": str(small_catalog["path"]), "catalog.images_root": str(small_catalog["images_root"]),
                             "out": str(tmp_path / "o"), "vlm.model": str(tiny_vlm()), "vlm.max_new_tokens": 4,
                             "run.runner": "local", "encoder.template": "{title}", "export.int8": False})
    summary = run_job(cfg, progress=False)
    version = load_version(tmp_path / "o")
    r = Retriever(version, encoder=OnnxTextEncoder(summary.version_dir / "encoder"))
    res = r.search("blue striped dress", k=2)
    assert res.items[0].item_id == "i1" and res.items[0].score > 0.95
    mixed = r.recommend(UserQuery(history=["i0"], text="blue striped dress", k=2, text_weight=0.5))
    assert "i0" not in {x.item_id for x in mixed.items} and len(mixed.items) == 2
    with pytest.raises(ValueError, match="ONNX encoder"):
        Retriever(version).search("anything")


def _exhaustive_ann(kind: str, x: np.ndarray) -> faiss.Index:
    """An approximate index searched so widely that it must answer exactly."""
    d = x.shape[1]
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, 20, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = 20  # every list
    else:
        index = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = len(x)  # the whole graph
    index.add(x)
    return index


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("exact_subset_max", [0, 20_000], ids=["selector", "subset"])
def test_ann_paths_with_filters_match_exact_when_searching_everything(kind, exact_subset_max):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    faiss.normalize_L2(x)
    groups = ["a" if n % 3 else "b" for n in range(2000)]
    flat = _version(x, group=groups)
    ann = _version(x, group=groups)
    ann.index = _exhaustive_ann(kind, x)
    exact = Retriever(flat, popularity={"i5": 50})
    approx = Retriever(ann, popularity={"i5": 50}, exact_subset_max=exact_subset_max)
    assert exact.flat is not None and approx.flat is None
    for q in [UserQuery(history=["i1", "i2"], k=7, filters={"group": "b"}),
              UserQuery(history=["i3"], k=5),
              UserQuery(history=["i4", "i9"], k=5, strategy="multi_interest")]:
        a, b = exact.recommend(q), approx.recommend(q)
        assert [(r.item_id, round(r.score, 4)) for r in a.items] == [(r.item_id, round(r.score, 4)) for r in b.items]
        if q.filters:
            assert all(int(r.item_id[1:]) % 3 == 0 for r in b.items) and len(b.items) == 7


def test_a_bad_fresh_weight_is_refused_naming_the_field():
    from pydantic import ValidationError

    for bad in (-1, 101, float("nan")):
        with pytest.raises(ValidationError, match="fresh_weight"):
            UserQuery(history=["i0"], fresh_weight=bad)
    # a content-only version has no new items to lift: the weight changes nothing
    r = Retriever(_version(CIRCLE))
    assert r.recommend(UserQuery(history=["i0"], k=3, fresh_weight=5.0)).items == \
        r.recommend(UserQuery(history=["i0"], k=3)).items


def test_max_per_keeps_at_most_n_items_per_value_in_score_order():
    product = pa.array(["a", "a", "a", "b", "b", "c", "c", "d", None, None])
    r = Retriever(_version(CIRCLE, product=product), max_per={"product": 1})  # the server's default
    plain = Retriever(_version(CIRCLE, product=product))
    q = UserQuery(history=["i0"], k=4)
    got = [x.item_id for x in r.recommend(q).items]
    assert got == ["i1", "i3", "i5", "i7"]  # i2 (a again), i4 (b again) skipped, order kept
    assert [x.item_id for x in plain.recommend(q).items] == ["i1", "i2", "i3", "i4"]
    # the request's own max_per wins; {} turns the default off; nulls are never limited
    assert [x.item_id for x in r.recommend(UserQuery(history=["i0"], k=4, max_per={})).items] == \
        ["i1", "i2", "i3", "i4"]
    assert [x.item_id for x in r.recommend(UserQuery(history=["i9"], k=4)).items] == ["i8", "i7", "i6", "i4"]
    assert [x.item_id for x in r.recommend(UserQuery(history=["i9"], k=4, max_per={"product": 2})).items] == \
        ["i8", "i7", "i6", "i5"]
    # batched: the same answers as one at a time
    batch = r.recommend_batch([q, UserQuery(history=["i9"], k=3)])
    assert [x.item_id for x in batch[0].items] == got
    assert [x.item_id for x in batch[1].items] == [x.item_id for x in r.recommend(UserQuery(history=["i9"], k=3)).items]
    # the popular fallback honours it too, and an unknown column is the request's error
    popular = Retriever(_version(CIRCLE, product=product), popularity={"i0": 5, "i1": 4, "i2": 3, "i3": 2},
                        max_per={"product": 1})
    fallback = popular.recommend(UserQuery(history=["ghost"], k=3))
    assert fallback.fallback == "popular" and [x.item_id for x in fallback.items] == ["i0", "i3", "i5"]
    with pytest.raises(ValueError, match="max_per names column 'colour'"):
        r.recommend(UserQuery(history=["i0"], k=2, max_per={"colour": 1}))
    with pytest.raises(ValueError):
        UserQuery(history=["i0"], max_per={"product": 0})


def test_diversity_takes_the_list_by_score_minus_closeness_to_what_is_taken():
    # two tight clusters near the profile and one item apart: MMR reaches across
    vectors = _angles([0, 1, 2, 3, 30, 89])
    r = Retriever(_version(vectors))
    q = dict(history=["i0"], k=3)
    assert [x.item_id for x in r.recommend(UserQuery(**q)).items] == ["i1", "i2", "i3"]
    # by hand: after i1, 0.4 x cos - 0.6 x closeness favours i5 (89 degrees) over i2, then i4 over i2
    spread = r.recommend(UserQuery(**q, diversity=0.6)).items
    assert [x.item_id for x in spread] == ["i1", "i5", "i4"]
    assert [x.item_id for x in r.recommend(UserQuery(**q, diversity=0.3)).items] == ["i1", "i2", "i3"]
    # scores are still each item's own; batch = single
    assert spread[1].score == pytest.approx(float(np.cos(np.radians(89))), abs=1e-6)
    assert r.recommend_batch([UserQuery(**q, diversity=0.6)])[0].items == spread
    with pytest.raises(ValueError, match="diversity"):
        UserQuery(**q, diversity=1.5)


def test_exclude_keeps_named_items_out_of_every_path():
    r = Retriever(_version(CIRCLE), popularity={"i9": 5, "i8": 3})
    single = r.recommend(UserQuery(history=["i0"], k=3, exclude=["i1", "ghost"]))
    assert [x.item_id for x in single.items] == ["i2", "i3", "i4"]  # i1 (the nearest) left out; unknown ids ignored
    [batched] = r.recommend_batch([UserQuery(history=["i0"], k=3, exclude=["i1"])])
    assert [x.item_id for x in batched.items] == ["i2", "i3", "i4"]
    popular = r.recommend(UserQuery(history=["ghost"], k=2, exclude=["i9"]))
    assert popular.fallback == "popular" and [x.item_id for x in popular.items] == ["i8", "i0"]
    kept = r.recommend(UserQuery(history=["i0"], k=2, exclude_seen=False, exclude=["i0"]))
    assert [x.item_id for x in kept.items] == ["i1", "i2"]  # exclude holds even when seen items may show
