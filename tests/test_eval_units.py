"""Evaluation building blocks against hand-computed cases."""

import numpy as np
import pytest

from groundrec.offline.evaluation import fidelity, metrics, stats
from groundrec.offline.evaluation.splits import cold_items, eval_users, split_interactions
from groundrec.offline.evaluation.systems import ContentSystem, ItemCooccurrence
from groundrec.offline.evaluation.config import EvalConfig, SplitConfig

DAY = 86_400


def test_metrics_by_hand_with_fewer_relevant_than_k():
    ranked = np.array([[3, 1, 0, 4, 2],    # relevant {1, 7}: one hit at rank 2
                       [5, 6, 8, 9, 2]])   # relevant {5, 6, 8}: hits at ranks 1-3
    m = metrics.per_user_metrics(ranked, [{1, 7}, {5, 6, 8}], [1, 3, 5])
    assert m["recall@1"].tolist() == [0.0, 1 / 3]
    assert m["recall@3"].tolist() == [0.5, 1.0]
    assert m["precision@5"].tolist() == [0.2, 0.6]
    assert m["hit_rate@1"].tolist() == [0.0, 1.0]
    assert m["mrr@5"].tolist() == [0.5, 1.0]
    assert m["mrr@1"].tolist() == [0.0, 1.0]
    # user 0: DCG = 1/log2(3); ideal for 2 relevant = 1 + 1/log2(3)
    assert m["ndcg@3"][0] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # user 1: all 3 relevant first: perfect, even at K=5 where the ideal holds only 3 hits
    assert m["ndcg@5"][1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="relevant"):
        metrics.per_user_metrics(ranked[:1], [set()], [1])


def test_list_metrics_coverage_and_popularity_bias():
    ranked = np.array([[0, 1], [0, 2]])
    pop = np.array([10.0, 2.0, 0.0, 5.0])
    out = metrics.list_metrics(ranked, pop, 4, [1, 2])
    assert out["coverage@1"] == 0.25 and out["coverage@2"] == 0.75
    assert out["arp@1"] == 10.0 and out["arp@2"] == pytest.approx((10 + 2 + 10 + 0) / 4)


def _random_log(n_users=200, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, 5000)
    ts = rng.integers(0, 60, 5000) * DAY + rng.integers(0, DAY, 5000)
    items = rng.integers(0, 300, 5000)
    return users, items, ts


@pytest.mark.parametrize("holdout", ["last_day", "last_n", "last_frac"])
def test_temporal_split_has_no_leakage_and_counts_add_up(holdout):
    users, items, ts = _random_log()
    split = split_interactions(users, ts, SplitConfig(holdout=holdout, n=2, frac=0.2))
    assert sum(split.counts().values()) == len(users)
    for u, p in split.parts.items():
        mine = np.flatnonzero(users == u)
        assert sorted(np.concatenate([p.train, p.valid, p.test]).tolist()) == sorted(mine.tolist())
        if len(p.train) and len(p.valid):
            assert ts[p.train].max() <= ts[p.valid].min()
        if len(p.valid) and len(p.test):
            assert ts[p.valid].max() <= ts[p.test].min()
        if holdout == "last_day":
            assert len(set(ts[p.test] // DAY)) == 1 and ts[p.test].min() // DAY == ts[mine].max() // DAY
            if len(p.train) and len(p.test):
                assert ts[p.train].max() // DAY < ts[p.test].min() // DAY
    test = eval_users(split, "test", items, ts)
    assert len(test) + sum(test.dropped.values()) == len(split.parts)
    for hist, rel in zip(test.history, test.relevant):
        assert rel and not (rel & set(hist.tolist()))  # relevant items were never seen


@pytest.mark.parametrize("holdout", ["last_n", "last_frac"])
def test_a_basket_is_never_cut_by_a_per_user_temporal_split(holdout):
    """Interactions at one moment (an invoice: 99.7% of retail's) were cut by a count: the
    basket's first items (in the file's item-id order) history, the rest test."""
    users = np.zeros(10, np.int64)
    ts = np.array([1, 2, 3, 3, 3, 4, 4, 4, 4, 4], np.float64)  # baskets of 1, 1, 3 and 5 items
    split = split_interactions(users, ts, SplitConfig(holdout=holdout, n=2, frac=0.2))
    p = split.parts[0]
    assert ts[p.test].tolist() == [4] * 5 and ts[p.valid].tolist() == [3] * 3 and ts[p.train].tolist() == [1, 2]
    assert ts[p.train].max() < ts[p.valid].min() and ts[p.valid].max() < ts[p.test].min()
    one = split_interactions(np.zeros(4, np.int64), np.full(4, 7.0), SplitConfig(holdout=holdout, n=2, frac=0.2))
    assert len(one.parts[0].test) == 4 and not len(one.parts[0].train)  # one basket: nothing before it


def test_random_split_ratios_and_seed():
    users, items, ts = _random_log()
    a = split_interactions(users, ts, SplitConfig(kind="random", seed=3))
    b = split_interactions(users, ts, SplitConfig(kind="random", seed=3))
    c = a.counts()
    assert sum(c.values()) == len(users)
    assert abs(c["train"] / len(users) - 0.8) < 0.03 and abs(c["test"] / len(users) - 0.1) < 0.03
    assert all(np.array_equal(a.parts[u].test, b.parts[u].test) for u in a.parts)
    # each part in time order (the log is not: sorting positions gave the file's order)
    for part in a.parts.values():
        for positions in (part.train, part.valid, part.test):
            assert (np.diff(ts[positions]) >= 0).all()


def test_cold_items_split_holds_out_every_interaction_of_its_items():
    users, items, ts = _random_log()
    cfg = SplitConfig(kind="cold_items", cold_share=0.2, seed=1)
    split = split_interactions(users, ts, cfg, items)
    valid_items, test_items = cold_items(items, cfg)
    assert len(test_items) == len(valid_items) == round(0.2 * len(np.unique(items)))
    assert not set(valid_items.tolist()) & set(test_items.tolist())
    assert sum(split.counts().values()) == len(users)
    for u, p in split.parts.items():
        assert set(items[p.test].tolist()) <= set(test_items.tolist())
        assert set(items[p.valid].tolist()) <= set(valid_items.tolist())
        assert not set(items[p.train].tolist()) & (set(test_items.tolist()) | set(valid_items.tolist()))
    # every interaction of a test item is in some user's test part: nothing of it is trained on
    held = np.concatenate([p.test for p in split.parts.values()])
    assert sorted(held.tolist()) == np.flatnonzero(np.isin(items, test_items)).tolist()
    test = eval_users(split, "test", items, ts)
    for hist, rel in zip(test.history, test.relevant):
        assert rel <= set(test_items.tolist()) and not set(hist.tolist()) & set(test_items.tolist())
    with pytest.raises(ValueError, match="needs the interactions' items"):
        split_interactions(users, ts, cfg)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(100):
        sample = rng.random(400) < 0.3  # true mean 0.3
        mean, lo, hi = stats.bootstrap_ci(sample.astype(float), 500, 0.05, seed=rep)
        assert lo <= mean <= hi
        covered += lo <= 0.3 <= hi
    assert 88 <= covered <= 100


def test_paired_test_and_holm():
    rng = np.random.default_rng(1)
    a = rng.random(300)
    assert stats.paired_test(a, a) == 1.0
    assert stats.paired_test(a + 0.1, a, 2000) < 0.001
    null = [stats.paired_test(rng.random(200), rng.random(200), 500, seed=s) for s in range(40)]
    assert np.mean(np.array(null) < 0.05) < 0.2  # not significant under the null, mostly
    sig = stats.holm({("a", "b"): 0.01, ("a", "c"): 0.02, ("b", "c"): 0.04}, 0.05)
    # Holm: 0.01 <= 0.05/3 yes; 0.02 <= 0.05/2 yes; 0.04 <= 0.05/1 yes
    assert sig == {("a", "b"): True, ("a", "c"): True, ("b", "c"): True}
    sig = stats.holm({("a", "b"): 0.03, ("a", "c"): 0.001}, 0.05)
    assert sig == {("a", "c"): True, ("a", "b"): True}
    sig = stats.holm({("a", "b"): 0.04, ("a", "c"): 0.03}, 0.05)  # 0.03 > 0.05/2: none
    assert sig == {("a", "c"): False, ("a", "b"): False}


def test_fidelity_normalises_synonyms_and_partial_answers():
    assert fidelity.agrees("Dark Blue", "blue") and fidelity.agrees("gray", "Grey")
    assert fidelity.agrees("Stripes", "striped") and fidelity.agrees("T-shirts", "T-shirt")
    assert not fidelity.agrees("red", "blue") and not fidelity.agrees(None, "blue") and not fidelity.agrees("", "")
    assert fidelity.agrees("navy", "blue", {"navy": "blue"})
    # a hedge or a list is no answer: a constant listing every colour scored 1.0 on H&M's colours
    assert not fidelity.agrees("black or navy blue", "blue") and not fidelity.agrees("red blue green black", "blue")
    assert fidelity.agrees("light pink", "pink") and not fidelity.agrees("light dusty pink", "pink")
    assert fidelity.agrees("black and white", "black and white")  # the catalog's own value may say "and"
    out = fidelity.field_accuracy(["blue", None, "red", "green"], ["blue", "blue", "red", None])
    assert out == {"n": 3, "accuracy": 2 / 3, "answered": 2 / 3, "majority_baseline": 2 / 3}
    # the baseline is the best constant answer by the same rule: "blue" is right on 4 of 5 here
    # (the most common whole value, "blue", counted 2 of 5)
    colours = ["blue", "blue", "dark blue", "light blue", "red"]
    assert fidelity.field_accuracy(["red"] * 5, colours)["majority_baseline"] == 4 / 5
    assert fidelity.best_constant(["dark blue", "dark green", "dark red", "black", "white"]) == 3  # "dark"


def test_cooccurrence_and_content_systems_by_hand():
    # users bought {0,1}, {0,1}, {1,2}: item 1 co-occurs with 0 twice and with 2 once
    cf = ItemCooccurrence([np.array([0, 1]), np.array([0, 1]), np.array([1, 2])], 4)
    s = cf.scores([np.array([0])], [np.zeros(1)])[0]
    assert s[1] > 0 and s[2] == 0 and s[3] == 0
    assert s[1] == pytest.approx(2 / np.sqrt(2 * 3))  # cosine: both / sqrt(buyers of 0 * buyers of 1)
    v = np.array([[1, 0], [0.8, 0.6], [0, 1], [0, 0]], dtype=np.float32)  # item 3 has no vector
    cs = ContentSystem("c", "r", v, popularity=np.array([0, 0, 5, 9.0]))
    scores = cs.scores([np.array([0]), np.array([3])], [np.zeros(1), np.zeros(1)])
    assert np.argmax(scores[0][1:3]) == 0 and scores[0][3] == -np.inf
    assert np.argmax(scores[1][:3]) == 2  # no usable history: popularity fallback


def test_score_fusion_ranks_a_user_with_one_side_only_by_that_side_not_by_popularity():
    """A history whose items have no visual vector (unreadable images): the visual side's
    popularity stand-in (1e3 x log popularity) swamped the text cosines."""
    from groundrec.offline.evaluation.systems import ScoreFusion

    text = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    visual = np.array([[0, 0], [1, 0], [0, 1], [0.7, 0.7]], dtype=np.float32)  # item 0: no image
    popularity = np.array([1, 1, 1, 500.0])
    fusion = ScoreFusion("f", "title+visual", ContentSystem("t", "title", text, popularity=popularity),
                         ContentSystem("v", "visual", visual, popularity=popularity), text_weight=0.5)
    history = [np.array([0])]
    scores = fusion.scores(history, [np.zeros(1)])
    assert fusion.top(scores, 2, history)[0].tolist() == [1, 3]  # by its text (item 1 first), not item 3 first
    both = [np.array([1])]
    assert fusion.top(fusion.scores(both, [np.zeros(1)]), 1, both)[0].tolist() == [3]  # both sides: blended


def test_eval_config_is_validated_at_the_edge():
    with pytest.raises(ValueError, match="unknown representation"):
        EvalConfig(representations=["title", "clip_magic"])
    with pytest.raises(ValueError, match="primary_metric"):
        EvalConfig(primary_metric="recall@7")


def test_visual_features_skip_bad_images_and_come_from_the_cache_on_a_rerun(small_catalog, tmp_path):
    from groundrec.offline.catalog import load_catalog
    from groundrec.offline.evaluation.visual import encode_images
    from groundrec.offline.dev.tiny_models import build_tiny_vision
    from groundrec.shared.config import CatalogConfig

    model = build_tiny_vision(tmp_path / "vit")
    items = load_catalog(CatalogConfig(path=small_catalog["path"], images_root=small_catalog["images_root"]))
    first, bad, encoded = encode_images(str(model), items, batch_size=4, progress=False, cache_root=tmp_path / "c")
    assert encoded == 6 and sum(bad.values()) == 3
    assert set(bad) == {"image file not found", "corrupt or truncated image", "not an image (unrecognised or unsupported format)"}
    norms = np.linalg.norm(first, axis=1)
    ids = items.column("item_id").to_pylist()
    assert np.allclose(norms[[ids.index(i) for i in small_catalog["good"]]], 1, atol=1e-5)
    assert (norms[[ids.index(i) for i in ("missing", "truncated", "notimage")]] == 0).all()
    again, bad_again, encoded_again = encode_images(str(model), items, progress=False, cache_root=tmp_path / "c")
    assert encoded_again == 0 and np.allclose(again, first, atol=1e-6) and bad_again == bad


def test_intra_list_diversity_by_hand():
    space = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    # lists: two orthogonal items (distance 1), two identical (0), one opposite pair (2), padding
    top = np.array([[0, 1], [0, 2], [0, 3], [1, -1]])
    assert metrics.intra_list_diversity(top, space) == pytest.approx((1 + 0 + 2) / 3)
    three = np.array([[0, 1, 2]])  # pairs: (0,1) 1, (0,2) 0, (1,2) 1
    assert metrics.intra_list_diversity(three, space) == pytest.approx(2 / 3)
    lists = metrics.list_metrics(top, np.ones(4), 4, [2], space)
    assert lists["diversity@2"] == pytest.approx(1.0) and "diversity@2" not in metrics.list_metrics(top, np.ones(4), 4, [2])


def test_the_published_row_learns_from_what_test_may_see_and_nothing_else():
    """``groundrec published``'s job runs on every user's training and validation parts: the
    interactions test users' histories hold, not one of test's."""
    from groundrec.offline.evaluation.data import EvalData
    from groundrec.offline.evaluation.published import training_interactions
    from groundrec.offline.interactions import Interactions

    users, items, ts = _random_log()
    split = split_interactions(users, ts, SplitConfig(holdout="last_frac"))
    inter = Interactions(users, items, ts, [f"u{u}" for u in range(200)], 0)
    data = EvalData(None, inter, split, eval_users(split, "valid", items, ts), eval_users(split, "test", items, ts),
                    [], [], None, None)
    seen = training_interactions(data)
    c = split.counts()
    assert len(seen.items) == c["train"] + c["valid"] and c["test"] > 0
    held = {(int(users[i]), int(ts[i]), int(items[i])) for p in split.parts.values() for i in p.test}
    got = set(zip(seen.users.tolist(), seen.ts.tolist(), seen.items.tolist()))
    assert got == {(int(users[i]), int(ts[i]), int(items[i])) for p in split.parts.values()
                   for i in np.concatenate([p.train, p.valid])} and not got & held
    # items with nothing to embed (a zero vector) leave the version with their interactions, as in the job
    vectors = np.ones((300, 4), np.float32)
    vectors[[3, 7]] = 0
    kept = training_interactions(data, vectors)
    assert not {3, 7} & set(kept.items.tolist()) and len(kept.items) == len(seen.items) - np.isin(seen.items, [3, 7]).sum()


def test_the_sequence_encoder_row_ranks_by_its_queries_holds_the_hybrids_new_items_and_falls_back_to_popular():
    """``SequenceSystem`` answers as a ``strategy: sequence`` request does: the encoder's query
    by inner product against the index rows, seen items excluded; with the version's hybrid
    (``places``) each list holds the new items of the hybrid's list for that user, each at its
    encoder score in place of the list's lowest others; a history the encoder makes nothing of
    (a zero query) gets the popular list."""
    from groundrec.offline.evaluation.sequence_system import SequenceSystem
    from groundrec.offline.evaluation.systems import System

    class Queries:  # the encoder's part: each history's query is the vector of its last item
        def encode(self, histories):
            return np.stack([index[h[-1]] if len(h) and h[-1] < 4 else np.zeros(2, np.float32) for h in histories])

    class Hybrid(System):  # the hybrid's part: user 0's list leads with the new item 4, user 1's holds none
        def scores(self, histories, history_ts):
            return np.array([[0, 0, 0, 0, 9, 8], [0, 0, 0, 9, -1, 8]], np.float32)[:len(histories)]

    index = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.7, 0.3], [0.1, 0.9]], np.float32)
    popularity = np.array([5, 4, 3, 9, 0, 1])  # item 4 is new
    system = SequenceSystem("s", "r", Queries(), index, popularity)
    histories = [np.array([0]), np.array([5])]  # item 5's row is unknown to the encoder here: a zero query
    top = system.top(system.scores(histories, [np.zeros(1)] * 2), 3, histories)
    assert top[0].tolist() == [1, 2, 4] and top[1].tolist() == [3, 0, 1]  # by score; then by popularity
    held = SequenceSystem("s", "r", Queries(), index, popularity, places=Hybrid())
    assert not held.prefix_consistent
    two = [np.array([0]), np.array([2])]
    top = held.top(held.scores(two, [np.zeros(1)] * 2), 2, two)
    assert top[0].tolist() == [1, 4]  # the hybrid's new item in place of the encoder's second
    assert top[1].tolist() == [0, 1]  # the hybrid's list holds no new item: the encoder's own list
    assert held.top(held.scores(two, [np.zeros(1)] * 2), 3, two)[0].tolist() == [1, 2, 4]  # already there


def _row(system, test, valid, representation="title"):
    return {"system": system, "label": system, "representation": representation, "note": None,
            "metrics": {"recall@20": {"mean": test}}, "valid_recall@20": valid}


def test_the_verdict_takes_each_groups_row_by_validation_not_by_test():
    """The best of several rows on test is biased upward: a comparison's row is the group's best
    on validation when every row of the group has a validation score, else its best on test."""
    from groundrec.offline.evaluation.report import verdict

    rows = [_row("VLM4Rec mean (a)", 0.30, 0.20), _row("VLM4Rec mean (b)", 0.28, 0.25),
            _row("Most popular", 0.10, 0.12), _row("Random", 0.01, 0.01)]
    result = {"protocol": {"primary_metric": "recall@20"}, "rows": rows,
              "pairwise": [{"a": x["label"], "b": y["label"], "significant": True, "p": 0.001}
                           for i, x in enumerate(rows) for y in rows[i + 1:]]}
    line = next(x for x in verdict(result) if x.startswith("- Best content-based system vs best baseline"))
    assert line.startswith("- Best content-based system vs best baseline: **VLM4Rec mean (b)** recall@20 0.2800 vs "
                           "**Most popular**")
    rows[1]["valid_recall@20"] = None  # one row without a validation score: the group is taken on test
    line = next(x for x in verdict(result) if x.startswith("- Best content-based system vs best baseline"))
    assert "**VLM4Rec mean (a)** recall@20 0.3000" in line


def test_a_global_time_split_is_one_cut_for_every_user():
    """``global_time``: the last ``frac`` of all interactions by time is test and the ``frac``
    before it validation, for every user alike: nothing any system learns from comes after a
    test interaction of anyone's."""
    rng = np.random.default_rng(3)
    users, ts = rng.integers(0, 40, 2000), rng.integers(0, 10_000_000, 2000)
    items = rng.integers(0, 300, 2000)
    split = split_interactions(users, ts, SplitConfig(kind="global_time", frac=0.1))
    train = np.concatenate([p.train for p in split.parts.values()])
    valid = np.concatenate([p.valid for p in split.parts.values()])
    test = np.concatenate([p.test for p in split.parts.values()])
    assert len(train) + len(valid) + len(test) == 2000 and len(test) == 200 and len(valid) == 200
    assert ts[train].max() < ts[valid].min() and ts[valid].max() < ts[test].min()
    assert "global temporal split" in split.description
    late = eval_users(split_interactions(np.array([0, 0, 1, 1]), np.array([0, 10, 20, 30]),
                                         SplitConfig(kind="global_time", frac=0.25)), "test", np.array([1, 2, 3, 4]),
                      np.array([0, 10, 20, 30]))
    assert late.users == [1] and late.history[0].tolist() == [3] and late.relevant == [{4}]


def test_an_item_without_a_vector_adds_no_distance_to_its_list():
    """A zero row (no text to embed) was as far from every item as can be: popularity and the
    collaborative baselines, which list such items, read as more diverse."""
    space = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert metrics.intra_list_diversity(np.array([[0, 1, 2]]), space) == pytest.approx(0.0)
    assert metrics.intra_list_diversity(np.array([[2, 3, -1]]), space) == 0.0  # nothing known: no list counted
    assert metrics.intra_list_diversity(np.array([[0, 4, 3]]), space) == pytest.approx(1.0)


def test_one_user_has_no_bootstrap_interval_and_small_p_values_keep_their_digits():
    from groundrec.online.report.report import _g
    from groundrec.shared.stats import bootstrap_ratios

    point, lo, hi = bootstrap_ratios(np.array([2.0]), np.array([10.0]))
    assert point[0] == pytest.approx(0.2) and np.isnan(lo[0]) and np.isnan(hi[0])  # was [0.2, 0.2]
    point, lo, hi = bootstrap_ratios(np.array([2.0, 0.0]), np.array([10.0, 10.0]))
    assert lo[0] < hi[0]
    assert (_g(3e-7), _g(-4e-5), _g(0.0), _g(None), _g(0.0123456)) == ("3e-07", "-4e-05", "< 1e-300", "–", "0.0123")


def test_eval_gives_a_slice_of_one_user_no_interval_and_writes_it_as_strict_json():
    """eval's own bootstrap gave one user (a cold slice of one on a small catalog) a zero-width
    interval [x, x], as the online report's did before."""
    import json

    from groundrec.offline.evaluation.report import _fmt, results_json

    mean, lo, hi = stats.bootstrap_ci(np.array([0.5]))
    assert mean == 0.5 and np.isnan(lo) and np.isnan(hi)
    assert _fmt({"mean": mean, "ci_low": lo, "ci_high": hi}) == "0.5000 [no interval: one user]"
    cell = {"slices": {"cold": {"users": 1, "mean": mean, "ci_low": lo, "ci_high": np.float32("nan")}}}
    strict = json.loads(results_json(cell), parse_constant=lambda c: 1 / 0)  # NaN would raise
    assert strict["slices"]["cold"]["ci_low"] is None and strict["slices"]["cold"]["ci_high"] is None
    assert stats.bootstrap_ci(np.array([0.0, 1.0]))[1] < stats.bootstrap_ci(np.array([0.0, 1.0]))[2]


def test_the_recency_ease_row_decays_its_fit_by_age_where_validation_after_a_cut_in_time_says_so(tmp_path):
    """With ``tuning.collab.train_half_life_days`` and one cut in time, eval's recency-EASE row
    scores each half-life on its validation users (what came after the first cut) at its chosen
    reg and half-life, and keeps the best where it beats none by one standard error. Each anchor
    item was bought with 25 others by many users a year ago and lately with one new partner by a
    few; the partner is what validation and test hold out: the decayed row finds it (its params
    name the half-life kept), the plain row, without half-lives, does not (and has no decay in its params).
    eval's hybrid (random content beside) is decayed so too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from groundrec.offline.evaluation.compare import Runner
    from groundrec.offline.evaluation.config import EvalConfig
    from groundrec.offline.evaluation.data import read_and_split
    from groundrec.offline.evaluation.hybrid import HYBRID, RECENCY_FULL, Fits, collab_rows, hybrid_rows
    from groundrec.offline.evaluation.representations import Representation

    day, anchors, old = 86_400.0, 20, 25
    partner = lambda a: anchors * (old + 1) + a  # noqa: E731
    rows = []  # (user, item, day)
    for a in range(anchors):
        for p in range(old):
            for _ in range(10):
                u = len(rows) // 2
                rows += [(u, a, 0), (u, anchors + a * old + p, 0)]
        for first, then in [(250, 251)] * 3 + [(300, 330)] * 3 + [(300, 340)] * 3:
            u = len(rows) // 2
            rows += [(u, a, first), (u, partner(a), then)]
    users, items, days = map(np.array, zip(*rows))
    pq.write_table(pa.table({"item_id": [f"i{i}" for i in range(partner(anchors))]}), tmp_path / "items.parquet")
    pq.write_table(pa.table({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                             "timestamp": (days * day).astype("int64")}), tmp_path / "inter.parquet")

    def rows(days_grid: list[float], hybrid: bool = False) -> dict:
        cfg = EvalConfig.model_validate({
            "catalog": {"path": tmp_path / "items.parquet", "text_columns": []},
            "interactions": {"path": tmp_path / "inter.parquet"},
            "split": {"kind": "global_time", "frac": 0.005},
            "tuning": {"collab": {"reg": [10.0], "half_life": [0.0], "widenings": 0,
                                  "train_half_life_days": days_grid}}})
        data = read_and_split(cfg)
        assert {int(t) for t in np.concatenate(data.history_times("test"))} <= {0, 250 * 86_400, 251 * 86_400,
                                                                               300 * 86_400, 330 * 86_400}
        runner = Runner(cfg, data, progress=False)
        collab_rows(runner, None)
        if hybrid:  # eval's hybrid of random content vectors: its tuner judges the decay on the same users
            content = np.random.default_rng(0).normal(size=(data.n_items, 16)).astype(np.float32)
            content /= np.linalg.norm(content, axis=1, keepdims=True)
            fits = {stage: Fits(getattr(data, f"{stage}_histories"), data.n_items, content, cfg.tuning.collab, 0,
                                times=data.history_times(stage)) for stage in ("valid", "test")}
            hybrid_rows(runner, Representation("random", "random unit vectors", content), {}, cfg.tuning.collab,
                        fits["valid"], fits["test"])
        return {r.system: r for r in runner.rows}

    recall = lambda row: row.per_user["recall@20"].mean()  # noqa: E731
    decayed, plain = rows([30.0, 365.0], hybrid=True), rows([])
    ease = decayed[RECENCY_FULL]
    assert ease.params["train_half_life_days"] == 30.0 and ease.note is None  # a note marks a row built with a toy
    assert "train_half_life_days" not in plain[RECENCY_FULL].params
    assert recall(ease) == 1.0 and recall(plain[RECENCY_FULL]) == 0.0
    assert decayed[HYBRID].params["train_half_life_days"] == 30.0 and recall(decayed[HYBRID]) == 1.0


def test_the_hybrid_tuner_scores_validation_users_as_the_row_itself_is_scored(tmp_path):
    """A validation user whose history has no item with a content vector gets the popular
    fallback on test (``CollabSystem.top``); the tuner's validation path ranked that user's raw
    scores instead, so a choice was made on other lists than the row is measured by."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from groundrec.offline.evaluation.compare import Runner
    from groundrec.offline.evaluation.config import EvalConfig
    from groundrec.offline.evaluation.data import read_and_split
    from groundrec.offline.evaluation.hybrid import EvalHybridScorer, Fits, hybrid_row
    from groundrec.offline.evaluation.representations import Representation

    rng, n_items, rows = np.random.default_rng(0), 40, []
    for u in range(120):  # items 30.. have no content vector; a third of the users bought only those
        pool = np.arange(30, 40) if u % 3 == 0 else np.arange(0, 40)
        bought = rng.choice(pool, 4, replace=False).tolist()
        popular = [i for i in rng.permutation(5).tolist() if i not in bought][:2]  # validation, then test
        for day, item in enumerate(bought + popular):
            rows.append((u, item, day))
    users, items, days = map(np.array, zip(*rows))
    pq.write_table(pa.table({"item_id": [f"i{i}" for i in range(n_items)]}), tmp_path / "items.parquet")
    pq.write_table(pa.table({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                             "timestamp": (days * 86_400).astype("int64")}), tmp_path / "inter.parquet")
    cfg = EvalConfig.model_validate({"catalog": {"path": tmp_path / "items.parquet", "text_columns": []},
                                     "interactions": {"path": tmp_path / "inter.parquet"},
                                     "split": {"holdout": "last_n", "n": 1},
                                     "tuning": {"collab": {"reg": [10.0], "half_life": [0.0], "widenings": 0}}})
    data = read_and_split(cfg)
    runner = Runner(cfg, data, progress=False)
    content = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    content[[data.items.column("item_id").to_pylist().index(f"i{i}") for i in range(30, 40)]] = 0.0
    rep = Representation("some", "content for items 0-29 only", content)
    on_valid = Fits(data.valid_histories, data.n_items, content, cfg.tuning.collab, 0)
    scorer = EvalHybridScorer(runner, rep, {}, on_valid)
    assert scorer.no_profile  # the users this is about
    for weight in (0.0, 0.5):
        tuned = scorer.hybrid(10.0, 0.0, 0.0, [weight])[0]
        row = hybrid_row(runner, rep, data.pop_valid, {}, on_valid(10.0), weight)
        np.testing.assert_array_equal(tuned, runner.valid_users_scores(row))
