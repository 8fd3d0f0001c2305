"""A hybrid version end to end: the job learns collaborative vectors from interactions,
publishes them through the artifact contract, and the service ranks exactly as eval scores
the hybrid."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from groundrec.offline.collab import CollabModel
from groundrec.offline.config import load_job_config
from groundrec.offline.demo import make_demo_data
from groundrec.offline.evaluation.compare import ranking
from groundrec.offline.evaluation.splits import EvalUsers
from groundrec.offline.evaluation.systems import ContentSystem, hybrid_system
from groundrec.offline.job import run_job
from groundrec.online.retrieve import Retriever
from groundrec.online.schemas import UserQuery
from groundrec.online.version import VersionError, load_version
from groundrec.shared import artifact
from groundrec.shared.scoring.collab import Projection


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, tiny_vlm):
    root = tmp_path_factory.mktemp("hybrid")
    data = make_demo_data(root / "data", n_items=60, n_users=40, seed=3)
    # Four catalog items nobody bought: they must still be published, recommended and usable.
    catalog = pq.read_table(data["catalog"])
    inter = pq.read_table(data["interactions"])
    never = [i for i in catalog.column("item_id").to_pylist() if i not in set(inter.column("item_id").to_pylist())]
    if len(never) < 4:
        inter = inter.filter(pa.compute.invert(pa.compute.is_in(inter.column("item_id"),
                                                                pa.array(catalog.column("item_id").to_pylist()[:4]))))
        pq.write_table(inter, data["interactions"])
    cfg = load_job_config(None, {
        "catalog.path": str(data["catalog"]), "out": str(root / "art"), "vlm.model": str(tiny_vlm("smolvlm")),
        "vlm.max_new_tokens": 6, "vlm.batch_size": 8, "run.runner": "local", "export.enabled": False,
        "catalog.text_columns": ["title"], "encoder.template": "{title}",
        "interactions.path": str(data["interactions"]), "collab.rank": 16, "collab.reg": [1.0, 10.0],
        "collab.weight": [0.1, 1.0, 10.0], "collab.half_life": [3.0]})  # every hybrid test: a recency-weighted query
    summary = run_job(cfg, progress=False)
    return {"summary": summary, "art": root / "art", "interactions": data["interactions"], "cfg": cfg, "root": root}


@pytest.fixture(scope="module")
def full_width(hybrid):
    """The same job with ``collab.project`` off and the model factorised (``full_rank_max_mb`` 0):
    a hybrid indexed at its full width, scored by one product (the exact model's split form is
    ``exact``'s), and a collaborative query without recency."""
    cfg = hybrid["cfg"].model_copy(update={"out": hybrid["root"] / "art_full", "cache_dir": hybrid["cfg"].resolved_cache_dir,
                                           "collab": hybrid["cfg"].collab.model_copy(update={"project": False,
                                                                                             "half_life": [0.0],
                                                                                             "full_rank_max_mb": 0.0})})
    summary = run_job(cfg, progress=False)
    assert not artifact.verify(summary.version_dir).collab["model"].endswith("full rank")  # what is tested: factorised
    return {**hybrid, "summary": summary, "art": hybrid["root"] / "art_full"}


@pytest.fixture(scope="module")
def exact(hybrid):
    """The same job with the exact (full-rank) model kept at its full width: the service scores
    its collaborative part by a gather (``online/flat_scores.py``, split)."""
    collab_cfg = hybrid["cfg"].collab.model_copy(update={"project": False, "half_life": [0.0], "full_rank_max_mb": 64.0,
                                                         "rank": 1000})  # no narrower width to try
    cfg = hybrid["cfg"].model_copy(update={"out": hybrid["root"] / "art_exact", "collab": collab_cfg,
                                           "cache_dir": hybrid["cfg"].resolved_cache_dir})
    summary = run_job(cfg, progress=False)
    c = artifact.verify(summary.version_dir).collab
    assert c["full_rank"] and c["weight"] > 0  # what is tested: an exact hybrid
    return {**hybrid, "summary": summary, "art": hybrid["root"] / "art_exact"}


@pytest.fixture(params=["projected", "full width", "exact"])
def either(request, hybrid):
    return hybrid if request.param == "projected" else request.getfixturevalue(request.param.replace(" ", "_"))


def test_the_job_publishes_a_hybrid_version_and_records_its_model(hybrid):
    report = hybrid["summary"].learned
    manifest = artifact.verify(hybrid["summary"].version_dir)
    c = manifest.collab  # the version's record of the learn stage: the typed report, key for key
    assert c == report.to_manifest() and manifest.learn is None
    # every bought item fits the budget: the model is exact (one row of B per bought item) unless
    # the width rule narrowed it to a rank of its ladder (a quarter of collab.rank up to 4 times it)
    exact = c["full_rank"]
    assert report.model_name == c["model"] == ("EASE, full rank" if exact else "EASE, factorised")
    assert report.rank == c["rank"] and (exact or c["rank"] in (4, 8, 16, 32, 64))
    # validation's full_rank: the model's own rank kept (an exact model's head, a factorised one's collab.rank)
    assert c["validation"]["chosen"]["rank"] == c["rank"] and c["validation"]["chosen"]["full_rank"] == (
        c["rank"] == c["validation"]["width"][0]["rank"])
    assert c["query_half_life"] == 3.0 == c["validation"]["chosen"]["half_life"]  # the one value of its grid
    width = c["validation"]["width"]  # what width costs: the full model, then each narrower width tried
    full = c["validation"]["scores"][f"hybrid reg={c['reg']:g} half_life=3 weight={c['weight']:g}"]
    assert width[0]["score"] == full and width[0]["rank"] >= c["rank"]
    chosen = next(w for w in width if w["rank"] == c["rank"] and w["projected"] == c["validation"]["chosen"]["projected"])
    assert chosen["within"] and chosen["loss"] + chosen["se"] <= 0.02 * full + 1e-12  # within the rule
    narrower = [w for w in width[1:] if not w["projected"] and w["rank"] < c["rank"]]
    assert not any(w["within"] for w in narrower)  # the narrowest within the rule was taken
    grid = c["validation"]["grid"]  # the configured grid, widened where a choice sat on its edge
    assert {1.0, 10.0} <= set(grid["reg"]) and {0.1, 1.0, 10.0} <= set(grid["weight"])
    assert c["reg"] in grid["reg"] and c["weight"] in grid["weight"] and c["hybrid"]
    searched = {**grid, **c["validation"]["fresh"]["grid"]}  # the freshness lift's grid widens too
    assert all(w["value"] in searched[w["axis"]] for w in c["validation"]["widened"])
    assert c["window"]["interactions"] == pq.read_metadata(hybrid["interactions"]).num_rows
    assert c["validation"]["users"] > 0 and "content" in c["validation"]["scores"]
    assert c["items_from_content"] >= 4  # the never-bought items got vectors from their titles
    v = load_version(hybrid["art"])
    assert v.collab_query.shape == v.collab_item.shape == (v.index.ntotal, c["rank"])
    # Projected to the content's width: only because validation scored it within the rule (above).
    assert c["validation"]["chosen"]["projected"] and c["projection"]["dim"] == manifest.dim
    assert chosen["score"] == c["validation"]["scores"][f"hybrid reg={c['reg']:g} half_life=3 rank={c['rank']} "
                                                        f"weight={c['weight']:g} projected to {manifest.dim}"]
    assert v.index.d == manifest.dim == manifest.index_dim and manifest.hybrid_dim == manifest.dim + c["rank"]
    assert v.project_item.shape == v.project_query.shape == (manifest.dim + c["rank"], manifest.dim)


def test_the_job_summary_says_how_wide_the_hybrid_index_is(hybrid, full_width, capsys, monkeypatch):
    from groundrec.offline.cli import print_summary

    monkeypatch.setenv("COLUMNS", "400")
    dim = artifact.verify(hybrid["summary"].version_dir).dim
    print_summary(hybrid["summary"])
    assert f"index {dim} wide (projected from {dim + hybrid['summary'].learned.rank})" in capsys.readouterr().out
    print_summary(full_width["summary"])
    out = capsys.readouterr().out
    assert f"index {dim + full_width['summary'].learned.rank} wide" in out and "projected from" not in out


def test_without_the_projection_the_index_is_the_full_hybrid_width(full_width):
    manifest = artifact.verify(full_width["summary"].version_dir)
    c = manifest.collab
    assert c == full_width["summary"].learned.to_manifest()
    assert c["projection"] is None and not c["validation"]["chosen"]["projected"]
    assert not any("projected" in key for key in c["validation"]["scores"])
    assert not (full_width["summary"].version_dir / artifact.PROJECT_ITEM).exists()
    v = load_version(full_width["art"])
    assert v.project_query is None and v.index.d == manifest.dim + c["rank"] == manifest.index_dim


def test_service_ranks_exactly_as_eval_scores_the_hybrid(either):
    """The top-K identity of eval and the service, the recency of the collaborative query
    included (as the version stores it: 3 items projected, none at full width)."""
    hybrid = either
    v = load_version(hybrid["art"])
    assert v.collab_half_life == (3.0 if v.project_item is not None else 0.0)
    retriever = Retriever(v, fallback="error")
    # the exact model's collaborative part is gathered, not multiplied; every other is one product
    assert retriever.flat.split == bool(v.manifest.collab.get("full_rank") and v.project_item is None)
    model = CollabModel(v.collab_query, v.collab_item, np.ones(len(v.item_ids), bool))
    # the window's counts: what makes an item new (the freshness prior) in eval as in the service
    counts = v.items.column(artifact.WINDOW_INTERACTIONS).to_numpy().astype(np.float64)
    content = ContentSystem("c", "text", np.asarray(v.vectors), counts, recent_prior=v.recent_prior)  # its own prior
    projection = None if v.project_item is None else Projection(v.project_item, v.project_query)
    system = hybrid_system("hybrid", "text", content, model, v.collab_weight, projection,
                           half_life=v.collab_half_life, fresh_weight=v.collab_fresh_weight,
                           fresh_slots=v.collab_fresh_slots)
    inter = pq.read_table(hybrid["interactions"]).sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    histories: dict[str, list[int]] = {}
    for u, i in zip(inter.column("user_id").to_pylist(), inter.column("item_id").to_pylist()):
        histories.setdefault(u, []).append(v.row_of[i])
    users = list(histories.values())[:15]
    ranked = system.top(system.scores([np.array(h) for h in users], [np.zeros(len(h)) for h in users]), 10,
                        [np.array(h) for h in users])
    answers = retriever.recommend_batch([UserQuery(history=[v.item_ids[r] for r in h], k=10) for h in users])
    for h, want, got in zip(users, ranked, answers):
        assert [v.row_of[x.item_id] for x in got.items] == want.tolist()
    for h, batched in zip(users, answers):  # one at a time (its own collaborative-query path) agrees
        one = retriever.recommend(UserQuery(history=[v.item_ids[r] for r in h], k=10))
        assert [x.item_id for x in one.items] == [x.item_id for x in batched.items]
        assert np.allclose([x.score for x in one.items], [x.score for x in batched.items], atol=1e-5)


def test_places_kept_for_new_items_rank_the_same_in_eval_and_the_service(either):
    """With ``fresh_slots`` each list holds that many new items (the best by their score),
    the others are the best of the rest; eval's ranking (``System.top``) and the service's
    single and batch paths give the same lists."""
    hybrid = either
    v = load_version(hybrid["art"])
    counts = v.items.column(artifact.WINDOW_INTERACTIONS).to_numpy().astype(np.float64)
    new = {v.item_ids[r] for r in np.flatnonzero(counts == 0)}
    model = CollabModel(v.collab_query, v.collab_item, np.ones(len(v.item_ids), bool))
    projection = None if v.project_item is None else Projection(v.project_item, v.project_query)
    system = hybrid_system("hybrid", "text", ContentSystem("c", "text", np.asarray(v.vectors), counts,
                                                           recent_prior=v.recent_prior), model,
                           v.collab_weight, projection, half_life=v.collab_half_life, fresh_slots=2)
    bought = pq.read_table(hybrid["interactions"]).column("item_id").to_pylist()
    users = [[v.row_of[i] for i in bought[n:n + 4]] for n in range(0, 60, 4)]
    ranked = system.top(system.scores([np.array(h) for h in users], [np.zeros(len(h)) for h in users]), 10,
                        [np.array(h) for h in users])
    retriever = Retriever(v, fallback="error")
    queries = [UserQuery(history=[v.item_ids[r] for r in h], k=10, fresh_weight=0.0, fresh_slots=2) for h in users]
    batched = retriever.recommend_batch(queries)
    without = retriever.recommend_batch([q.model_copy(update={"fresh_slots": 0}) for q in queries])
    assert any(len(new & {x.item_id for x in plain.items}) < 2 for plain in without)  # the places change lists
    for q, want, got in zip(queries, ranked, batched):
        assert [v.row_of[x.item_id] for x in got.items] == want.tolist()
        assert len(new & {x.item_id for x in got.items}) >= 2
        assert [x.item_id for x in retriever.recommend(q).items] == [x.item_id for x in got.items]
    # eval measures each cut-off on the list ranked for it, as the service answers a request for k:
    # the top 5 keeps its own two places (it is not the first 5 of the list of 10)
    users_obj = EvalUsers(list(range(len(users))), [np.array(h) for h in users], [np.zeros(len(h)) for h in users],
                          [set() for _ in users])
    by_k = ranking(system, users_obj, [5, 10])
    for h, five in zip(users, by_k[5]):
        q = UserQuery(history=[v.item_ids[r] for r in h], k=5, fresh_weight=0.0, fresh_slots=2)
        assert [v.row_of[x.item_id] for x in retriever.recommend(q).items] == five.tolist()
        assert len(new & {v.item_ids[r] for r in five}) >= 2
    assert (by_k[5] != by_k[10][:, :5]).any()


def test_explain_gives_each_score_in_its_content_collaborative_and_prior_parts(either):
    v = load_version(either["art"])
    retriever = Retriever(v, fallback="error")
    history = [v.item_ids[r] for r in range(3)]
    plain = retriever.recommend(UserQuery(history=history, k=8, popularity_weight=0.2))
    told = retriever.recommend(UserQuery(history=history, k=8, popularity_weight=0.2, explain=True))
    assert [x.item_id for x in told.items] == [x.item_id for x in plain.items] and plain.items[0].parts is None
    for item in told.items:
        assert set(item.parts) == {"content", "collaborative", "prior"} and item.parts["collaborative"] != 0
        total = sum(item.parts.values())
        if v.project_item is None:  # at full width the parts add up to the score exactly
            assert total == pytest.approx(item.score, abs=1e-4)
        else:  # projected: the score is the projection's approximation of their sum
            assert total == pytest.approx(item.score, abs=0.25)


def test_a_new_item_reaches_a_list_through_the_freshness_prior(hybrid):
    """Items nobody bought in the window are marked in the version; the freshness prior the
    job chose (here forced to a large value) lifts them into lists, and a request can set its
    own (0: the collaborative part alone decides, and they stay out)."""
    cfg = hybrid["cfg"].model_copy(update={"out": hybrid["root"] / "art_fresh", "cache_dir": hybrid["cfg"].resolved_cache_dir,
                                           "collab": hybrid["cfg"].collab.model_copy(update={"fresh_weight": [5.0]})})
    summary = run_job(cfg, progress=False)
    assert summary.learned.choice.fresh_weight == 5.0  # scored as "published fresh_weight=5" (+ the recent prior's)
    assert any(name.split(" recent_weight=")[0] == "published fresh_weight=5" for name in summary.learned.scores)
    v = load_version(hybrid["root"] / "art_fresh")
    counts = v.items.column(artifact.WINDOW_INTERACTIONS).to_pylist()
    bought = set(pq.read_table(hybrid["interactions"]).column("item_id").to_pylist())
    new = {i for i, c in zip(v.item_ids, counts) if c == 0}
    assert new and new == {i for i in v.item_ids if i not in bought}
    retriever = Retriever(v, fallback="error")
    history = [i for i in v.item_ids if i in bought][:3]
    lifted = retriever.recommend(UserQuery(history=history, k=10))
    assert {x.item_id for x in lifted.items[:len(new)]} == new  # +5 puts every new item first
    plain = retriever.recommend(UserQuery(history=history, k=10, fresh_weight=0.0))
    assert [x.item_id for x in plain.items] != [x.item_id for x in lifted.items]
    assert len(new & {x.item_id for x in plain.items}) < len(new)
    assert retriever.recommend_batch([UserQuery(history=history, k=10)])[0].items == lifted.items


def test_an_item_nobody_bought_counts_in_a_history_through_its_content(hybrid):
    v = load_version(hybrid["art"])
    bought = set(pq.read_table(hybrid["interactions"]).column("item_id").to_pylist())
    fresh = next(i for i in v.item_ids if i not in bought)
    assert np.abs(v.collab_query[v.row_of[fresh]]).sum() > 0
    result = Retriever(v, fallback="error").recommend(UserQuery(history=[fresh], k=5))
    assert len(result.items) == 5 and result.fallback is None and fresh not in [x.item_id for x in result.items]


def test_a_hybrid_version_missing_its_collaborative_vectors_is_refused(hybrid, tmp_path):
    import shutil

    copy = tmp_path / "v"
    shutil.copytree(hybrid["summary"].version_dir, copy)
    (copy / artifact.COLLAB_ITEM).unlink()
    with pytest.raises(VersionError, match="collab_item.npy: missing"):
        load_version(copy)


def test_bad_interactions_stop_the_job_before_any_work_with_the_fix(hybrid, tmp_path, tiny_vlm):
    data = hybrid["interactions"].parent
    base = {"catalog.path": str(data / "catalog.parquet"), "out": str(tmp_path / "art"),
            "vlm.model": str(tiny_vlm("smolvlm")), "run.runner": "local", "export.enabled": False,
            "interactions.path": str(hybrid["interactions"])}
    with pytest.raises(ValueError, match=r"lack column\(s\) \['sku'\].*interactions.user_column/item_column"):
        run_job(load_job_config(None, {**base, "interactions.item_column": "sku"}), progress=False)
    assert not (tmp_path / "art" / "versions").exists() or not any((tmp_path / "art" / "versions").iterdir())
    # interactions whose items are none of the catalog's: a clear refusal, nothing published
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u1", "u2"], "item_id": ["x", "y", "x"], "timestamp": [1, 2, 3]}), other)
    with pytest.raises(ValueError, match="0 of 3 rows name an item of the catalog .*'x' is no catalog id"):
        run_job(load_job_config(None, {**base, "interactions.path": str(other)}), progress=False)  # when read
    assert artifact.current_version(tmp_path / "art") is None


def test_a_selective_filter_on_a_graph_index_scores_hybrid_items_as_the_exact_index_does(either):
    """On HNSW/IVF a filter passing few items is scored exactly over those items: for a hybrid
    version that must use [content, weight x item-side] (projected when the version is), the
    vectors the index holds."""
    import faiss

    hybrid = either
    flat = load_version(hybrid["art"])
    graph = load_version(hybrid["art"])
    held = faiss.rev_swig_ptr(flat.index.get_xb(), flat.index.ntotal * flat.index.d).reshape(flat.index.ntotal, -1)
    graph.index = faiss.IndexHNSWFlat(flat.index.d, 8, faiss.METRIC_INNER_PRODUCT)
    graph.index.add(np.ascontiguousarray(held))
    column = "category" if "category" in flat.items.column_names else flat.manifest.id_column
    value = flat.items.column(column)[0].as_py()
    history = list(flat.item_ids[5:9])
    want = Retriever(flat, fallback="error").recommend(UserQuery(history=history, k=5, filters={column: value}))
    got = Retriever(graph, fallback="error").recommend(UserQuery(history=history, k=5, filters={column: value}))
    assert got.items and [x.item_id for x in got.items] == [x.item_id for x in want.items]
    assert np.allclose([x.score for x in got.items], [x.score for x in want.items], atol=1e-5)


def test_the_best_new_items_are_the_same_on_a_graph_index_and_the_flat_one(either):
    """A kept place is filled from the new items scored exactly: on a flat index from the one
    score vector of the request (``Searcher.rank``), on a graph index from the new items'
    vectors built once at load (``among``); both must be the vectors the index holds."""
    import faiss

    flat = load_version(either["art"])
    graph = load_version(either["art"])
    held = faiss.rev_swig_ptr(flat.index.get_xb(), flat.index.ntotal * flat.index.d).reshape(flat.index.ntotal, -1)
    graph.index = faiss.IndexHNSWFlat(flat.index.d, 8, faiss.METRIC_INNER_PRODUCT)
    graph.index.add(np.ascontiguousarray(held))
    on_flat, on_graph = Retriever(flat, fallback="error"), Retriever(graph, fallback="error")
    assert on_flat.flat is not None and on_graph.flat is None and len(on_graph.new_rows) >= 3
    assert on_graph.searcher.new_vectors.shape == (len(on_graph.new_rows), flat.index.d)
    found = []
    for start in (0, 4, 8, 12):
        history = list(flat.item_ids[start:start + 4])
        profile, rows, _ = on_flat._profile(UserQuery(history=history, k=5))
        prior = on_flat._prior(UserQuery(history=history, k=5, popularity_weight=0.3))
        r = on_flat.ranker
        scores = r.final(r.scores_of(profile), set(rows), None, prior)
        want = r.best_new(scores[None, :], [0], [3])[0]  # what ``rank`` fills a flat index's places from
        got = on_graph.searcher.among(profile, 3, set(rows), None, prior)
        assert [r for r, _ in got] == [r for r, _ in want] and len(got) == min(3, len(set(on_flat.new_rows) - set(rows))), (len(on_flat.new_rows), rows)
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        assert all(r in on_flat.ranker.is_new and r not in rows for r, _ in got)
        found.append(len(got))
    assert max(found) >= 2  # an order among new items was compared, not a single one


def test_weight_zero_publishes_content_only_and_keeps_what_was_tried(hybrid):
    """When validation picks weight 0 the hybrid scores as content alone: the version is
    content only (no collaborative files, an index as wide as the embeddings) and the
    manifest's ``learn`` records the validation scores instead of ``collab``."""
    cfg = hybrid["cfg"].model_copy(update={"out": hybrid["root"] / "art0", "cache_dir": hybrid["cfg"].resolved_cache_dir,
                                           "collab": hybrid["cfg"].collab.model_copy(update={"weight": [0.0]})})
    summary = run_job(cfg, progress=False)
    manifest = artifact.verify(summary.version_dir)
    assert manifest.collab is None and manifest.learn == summary.learned.to_manifest()
    assert manifest.learn["weight"] == 0 and not manifest.learn["hybrid"]
    # reg x half_life at the first dropout, then the other dropouts at the reg chosen (weight 0
    # everywhere ties, so the first: reg 1)
    assert cfg.collab.reg == [1.0, 10.0] and cfg.collab.dropout == [0.0, 0.5]
    tried = [(r, (f" dropout={d:g}" if d else "") + (f" half_life={h:g}" if h else ""))
             for r, d in (("1", 0.0), ("10", 0.0), ("1", 0.5)) for h in cfg.collab.half_life]
    # then content alone's profile recency (each half-life in days), then its recent-popularity
    # prior with the recency chosen, each tried on the published scoring
    days = manifest.learn["validation"]["profile"]["grid"]["profile_half_life_days"]
    chosen = manifest.learn["profile_half_life_days"]
    recent = manifest.learn["validation"]["recent"]["grid"]["recent_weight"]
    assert set(manifest.learn["validation"]["scores"]) == {
        "content", *(f"collaborative reg={r}{h}" for r, h in tried), *(f"hybrid reg={r}{h} weight=0" for r, h in tried),
        *(f"published fresh_weight=0" + (f" profile_half_life_days={d:g}" if d else "") for d in days),
        *(f"published fresh_weight=0" + (f" recent_weight={w:g}" if w else "") +
          (f" profile_half_life_days={chosen:g}" if chosen else "") for w in recent)}
    assert set(cfg.collab.recent_weight) <= set(recent) and set(cfg.collab.profile_half_life_days) <= set(days)
    assert manifest.default_strategy == ("recency" if chosen else "mean")
    assert manifest.learn["query_half_life"] == 0.0  # no collaborative part: nothing to weight
    assert not (summary.version_dir / artifact.COLLAB_QUERY).exists()
    v = load_version(hybrid["root"] / "art0")
    assert v.collab_query is None and v.index.d == manifest.dim == manifest.index_dim
    hist = list(v.item_ids[:3])
    assert len(Retriever(v).recommend(UserQuery(history=hist, k=5)).items) == 5


def test_live_items_on_an_exact_hybrid_are_scored_as_its_index_rows(exact):
    """A changed item keeps its collaborative row (a unit vector: gathered), a new one gets a
    dense one from the version's content map: after both are applied the split scores still
    equal the product with every row the index now holds, and the new item is recommendable."""
    import faiss

    from groundrec.shared.live_items import LiveItem

    v = load_version(exact["art"])
    r = Retriever(v, fallback="error")
    assert r.flat.split
    old = v.item_ids[0]
    rng = np.random.default_rng(0)
    given = {i: (x / np.linalg.norm(x)).astype(np.float32) for i, x in
             (("brand-new", rng.standard_normal(v.vectors.shape[1])), (old, v.vectors[5]))}
    r.apply_live([LiveItem(old, {"title": "a changed title"}, False, None, 1.0, 1),
                  LiveItem("brand-new", {"title": "a new thing"}, True, 1.0, 1.0, 2)], given)
    n = v.index.ntotal
    assert r.flat.n == n == len(v.item_ids) and v.row_of[old] == n - 2
    rank = v.collab_item.shape[1]
    np.testing.assert_allclose(v.collab_item[n - 1], given["brand-new"] @ v.collab_content_map[:, rank:], atol=1e-7)
    held = faiss.rev_swig_ptr(v.index.get_xb(), n * v.index.d).reshape(n, v.index.d)
    history = list(v.item_ids[1:5])
    profile, _, _ = r._profile(UserQuery(history=history, k=5))
    np.testing.assert_allclose(r.flat(profile), profile @ held.T, rtol=1e-5, atol=1e-5)
    found = r.recommend(UserQuery(history=history, k=len(v.item_ids) - 4, exclude_seen=True))
    assert "brand-new" in [x.item_id for x in found.items]


@pytest.fixture(scope="module")
def trend(hybrid):
    """The same catalog whose buyers' last three purchases are all of six items (a trend content
    cannot know), content alone published: what finds them is the version's recent-popularity
    prior, chosen on validation."""
    inter = pq.read_table(hybrid["interactions"])
    ids = inter.column("item_id").to_pylist()
    trending = sorted(set(ids))[-6:]
    end = max(inter.column("timestamp").to_pylist())
    rng = np.random.default_rng(0)
    users = sorted(set(inter.column("user_id").to_pylist()))
    extra = [(u, trending[i], end + 3600 * (n + 1) + 60 * j)  # seconds: each user's last three purchases
             for n, u in enumerate(users) for j, i in enumerate(rng.choice(6, 3, replace=False))]
    more = pa.table({"user_id": [u for u, _, _ in extra], "item_id": [i for _, i, _ in extra],
                     "timestamp": pa.array([t for _, _, t in extra], inter.schema.field("timestamp").type)})
    path = hybrid["root"] / "trend.parquet"
    pq.write_table(pa.concat_tables([inter.select(["user_id", "item_id", "timestamp"]), more]), path)
    cfg = hybrid["cfg"].model_copy(update={
        "out": hybrid["root"] / "art_trend", "cache_dir": hybrid["cfg"].resolved_cache_dir,
        "interactions": hybrid["cfg"].interactions.model_copy(update={"path": str(path)}),
        "export": hybrid["cfg"].export.model_copy(update={"enabled": True, "int8": False}),  # live items embed with it
        "collab": hybrid["cfg"].collab.model_copy(update={"weight": [0.0], "recent_weight": [0.0, 0.1, 0.3, 1.0],
                                                          "valid_users": 20})})  # the others' trend: in training
    return {"summary": run_job(cfg, progress=False), "art": hybrid["root"] / "art_trend", "trending": trending,
            "interactions": path, "cfg": cfg}


@pytest.fixture(scope="module")
def trend_graph(trend, hybrid):
    """The trend's version on an HNSW graph (the index kind above ``flat_max_items``)."""
    base = trend["cfg"]
    graph = base.model_copy(update={"out": hybrid["root"] / "art_trend_hnsw",
                                    "index": base.index.model_copy(update={"kind": "hnsw"})})
    return {**trend, "summary": run_job(graph, progress=False), "art": hybrid["root"] / "art_trend_hnsw"}


def test_a_trend_is_published_as_the_versions_recent_prior_and_served_as_eval_scores_it(trend):
    """Validation chooses a recent-popularity prior; the version records its weight and counts;
    the service adds it to every list (single and batch alike, explained as the prior) exactly
    as eval's ``ContentSystem`` with that prior ranks, and the gate scores the version with it."""
    from groundrec.offline.gate import serving_system
    from groundrec.shared.scoring.searcher import Searcher

    manifest = artifact.verify(trend["summary"].version_dir)
    learned = manifest.learn
    assert manifest.collab is None and learned["recent_weight"] > 0 and learned["recent_days"] == 30.0
    assert learned["validation"]["recent"]["chosen"] == {"recent_weight": learned["recent_weight"]}
    v = load_version(trend["art"])
    assert v.manifest.recent_weight == learned["recent_weight"]
    counts = v.items.column(artifact.RECENT_INTERACTIONS).to_numpy().astype(np.float64)
    assert {v.item_ids[r] for r in np.argsort(-counts, kind="stable")[:6]} == set(trend["trending"])
    prior = Searcher.recent_prior_of(v.manifest.recent_weight, counts)
    system = ContentSystem("c", "text", np.asarray(v.vectors), np.zeros(len(counts)), recent_prior=prior)
    histories = [[r, (r + 7) % len(counts)] for r in range(12)]
    ranked = system.top(system.scores([np.array(h) for h in histories], [np.zeros(2)] * 12), 10,
                        [np.array(h) for h in histories])
    retriever = Retriever(v, fallback="error")
    queries = [UserQuery(history=[v.item_ids[r] for r in h], k=10) for h in histories]
    batch = retriever.recommend_batch(queries)
    without = ContentSystem("c", "text", np.asarray(v.vectors), np.zeros(len(counts)))
    assert (without.top(without.scores([np.array(h) for h in histories], [np.zeros(2)] * 12), 10,
                        [np.array(h) for h in histories]) != ranked).any()  # the prior changes lists
    for q, want, got in zip(queries, ranked, batch):
        assert [v.row_of[x.item_id] for x in got.items] == want.tolist()
        one = retriever.recommend(q.model_copy(update={"explain": True}))
        assert [x.item_id for x in one.items] == [x.item_id for x in got.items]
        assert [x.parts["prior"] for x in one.items] == pytest.approx([prior[v.row_of[x.item_id]] for x in one.items])
    gate_system, rows = serving_system(trend["summary"].version_dir)
    np.testing.assert_allclose(gate_system.recent_prior, prior)


def test_live_items_keep_the_recent_prior_aligned_a_new_one_without_a_changed_one_with_its_own(trend):
    """The items API adds rows: a new item has no recent interactions (prior 0), a changed one
    (a new row for new text) keeps its own; single and batch answers still agree."""
    from groundrec.online.config import ServeConfig
    from groundrec.online.schemas import RecommendRequest
    from groundrec.online.serving import build_serving
    from groundrec.shared.live_items import LiveItem

    art, version = trend["art"], trend["summary"].version
    s = build_serving(ServeConfig(artifacts=art, events="none", compute="thread"), version,
                      artifact.locate(art, version))
    r = s.retriever
    before = r.ranker.recent_prior.copy()
    hot = trend["trending"][0]
    old = r.v.row_of[hot]
    assert before[old] > 0
    s.apply_live(([LiveItem("brand-new", {"title": "a quokka lantern"}, True, 1.0, 1.0, 1),
                   LiveItem(hot, {"title": "the same item, new words"}, False, None, 2.0, 2)], None))
    prior = r.ranker.recent_prior
    assert len(prior) == r.v.index.ntotal == len(before) + 2
    assert prior[r.v.row_of["brand-new"]] == 0 and r.v.row_of[hot] != old and prior[r.v.row_of[hot]] == before[old]
    history = [r.v.item_ids[0], "brand-new"]
    one = r.recommend(RecommendRequest(history=history, k=10))
    batch = r.recommend_batch([RecommendRequest(history=history, k=10)])[0]
    assert [x.item_id for x in one.items] == [x.item_id for x in batch.items]
    assert hot in [x.item_id for x in r.recommend(RecommendRequest(history=[r.v.item_ids[1]], k=10)).items]


def test_on_a_graph_index_the_priors_head_joins_the_candidates_as_eval_ranks_it(trend_graph):
    """An approximate index finds items by their vectors: a trending item far from a profile is
    not among its candidates, yet the prior puts it first. The prior's head is scored beside
    the candidates, so short lists on the graph equal eval's exact ranking, single and batch."""
    import faiss

    from groundrec.shared.scoring.searcher import Searcher

    v = load_version(trend_graph["art"])
    assert isinstance(v.index, faiss.IndexHNSW) and v.manifest.recent_weight > 0
    counts = v.items.column(artifact.RECENT_INTERACTIONS).to_numpy().astype(np.float64)
    system = ContentSystem("c", "text", np.asarray(v.vectors), np.zeros(len(counts)),
                           recent_prior=Searcher.recent_prior_of(v.manifest.recent_weight, counts))
    retriever = Retriever(v, fallback="error")
    histories = [[r] for r in range(0, len(counts), 3)]
    ranked = system.top(system.scores([np.array(h) for h in histories], [np.zeros(1)] * len(histories)), 3,
                        [np.array(h) for h in histories])
    queries = [UserQuery(history=[v.item_ids[r] for r in h], k=3) for h in histories]
    far = 0
    for q, want, got in zip(queries, ranked, retriever.recommend_batch(queries)):
        assert [v.row_of[x.item_id] for x in got.items] == want.tolist()
        assert [x.item_id for x in retriever.recommend(q).items] == [x.item_id for x in got.items]
        cosine = np.asarray(v.vectors) @ np.asarray(v.vectors[v.row_of[q.history[0]]])
        far += any(np.sum(cosine > cosine[r]) >= 3 * retriever.searcher.overfetch + 1 for r in want)
    assert far  # some list holds an item the graph's candidates alone would not


@pytest.mark.parametrize("lift", [{"fresh_weight": 1.0}, {"popularity_weight": 0.5}, {"fresh_weight": 0.3,
                                                                                      "popularity_weight": 0.2}])
def test_on_a_graph_index_a_request_s_prior_reaches_items_beyond_the_candidates_as_exact_search_does(hybrid, lift):
    """A graph fetches its candidates by score alone: a freshness lift or a popularity prior
    added only to them left out the new and popular items exact search (eval, the job's
    validation, the gate) puts in the list (with a lift of 1, every list differed). The new
    items ranked exactly and the most popular are scored beside the candidates."""
    import faiss

    flat = load_version(hybrid["art"])
    graph = load_version(hybrid["art"])
    rows = faiss.rev_swig_ptr(flat.index.get_xb(), flat.index.ntotal * flat.index.d).reshape(flat.index.ntotal, -1)
    graph.index = faiss.IndexHNSWFlat(flat.index.d, 32, faiss.METRIC_INNER_PRODUCT)
    graph.index.hnsw.efSearch = 256  # the graph itself exact at this size: what differs is what is fetched
    graph.index.add(np.ascontiguousarray(rows))
    from collections import Counter

    popularity = dict(Counter(pq.read_table(hybrid["interactions"]).column("item_id").to_pylist()))
    exact, approximate = (Retriever(v, popularity, fallback="error") for v in (flat, graph))
    assert approximate.searcher.flat is None and len(approximate.searcher.new_rows)
    histories = [h for h in pq.read_table(hybrid["interactions"]).group_by("user_id").aggregate(
        [("item_id", "list")]).column("item_id_list").to_pylist()]
    queries = [UserQuery(history=h[-3:], k=3, **lift) for h in histories]
    want = [[x.item_id for x in r.items] for r in exact.recommend_batch(queries)]
    without = [[x.item_id for x in r.items] for r in exact.recommend_batch([q.model_copy(
        update={"fresh_weight": 0.0, "popularity_weight": 0.0}) for q in queries])]
    assert want != without  # the prior changes lists
    assert [[x.item_id for x in r.items] for r in approximate.recommend_batch(queries)] == want
    assert [[x.item_id for x in approximate.recommend(q).items] for q in queries] == want
