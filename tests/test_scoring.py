"""The scoring core (shared/scoring): the rules the job, eval and the service all call."""

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from groundrec.shared.scoring import popularity, ranking
from groundrec.shared.scoring.collab import Projection, collab_queries, hybrid_queries, index_rows, recency_parts
from groundrec.shared.scoring.profiles import (build_profile, mean_profile, mean_profiles, multi_interest,
                                               recency_profiles, recency_weights)

VALUES = st.sampled_from([-np.inf, -1.0, 0.0, 0.25, 0.5, 1.0])  # few values: many ties
# ties, and values whose sums round together in float32
BLENDED = st.one_of(VALUES.filter(np.isfinite), st.floats(-100, 100, width=32), st.sampled_from([1e-7, 2e-7, 1 + 1e-7]))


@settings(max_examples=300, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 400)), elements=VALUES), st.data())
def test_top_k_rows_matches_a_full_sort_with_ties_and_excluded_items(scores, data):
    """Every row sorted by (score desc, row asc) over its finite entries, however many ties
    straddle the k-th place and however many items are excluded; k beyond the items too."""
    ks = data.draw(st.lists(st.integers(1, 50), min_size=len(scores), max_size=len(scores)))
    got = ranking.top_k_rows(scores.copy(), ks)
    for row, k in enumerate(ks):
        finite = [i for i in range(scores.shape[1]) if np.isfinite(scores[row, i])]
        want = sorted(finite, key=lambda i: (-scores[row, i], i))[:k]
        assert [i for i, _ in got[row]] == want
        assert [s for _, s in got[row]] == [float(scores[row, i]) for i in want]


def test_top_k_matrix_breaks_ties_by_row_excludes_seen_and_pads():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1],
                       [0.2, 0.2, 0.2, 0.2, 0.2]])
    assert ranking.top_k_matrix(scores.copy(), 3).tolist() == [[1, 0, 2], [0, 1, 2]]
    assert ranking.top_k_matrix(scores.copy(), 2, [np.array([1]), np.array([0, 2])]).tolist() == [[0, 2], [1, 3]]
    # fewer rankable items than K: padded with -1, never an excluded item
    assert ranking.top_k_matrix(np.array([[0.3, -np.inf, 0.1]]), 3).tolist() == [[0, 2, -1]]


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(2, 60)), elements=VALUES.filter(np.isfinite)),
       st.data())
def test_target_in_top_k_agrees_with_the_list(scores, data):
    """The learn stage counts a hit without sorting: it must agree with the list itself."""
    n = scores.shape[1]
    targets = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=len(scores), max_size=len(scores))))
    seen = [np.array(sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=5))) - {t})) for t in targets]
    k = data.draw(st.integers(1, n))
    hits = ranking.target_in_top_k(scores.copy(), seen, targets, k)
    lists = ranking.top_k_matrix(scores.copy(), k, seen)
    assert hits.tolist() == [t in row for t, row in zip(targets, lists)]


def test_prior_and_exclusion_one_user_or_many():
    log_pop = popularity.log_prior(np.array([0.0, 3.0, 1.0]))
    one = ranking.add_prior(np.array([0.1, 0.1, 0.2], np.float32), 0.5, log_pop)
    many = ranking.add_prior(np.array([[0.1, 0.1, 0.2], [0.1, 0.1, 0.2]], np.float32), [0.5, 0.0], log_pop)
    assert np.array_equal(one, many[0]) and np.allclose(many[1], [0.1, 0.1, 0.2])
    assert ranking.top_k(one, 3)[0][0] == 1  # the popular item overtakes
    assert [r for r, _ in ranking.top_k(ranking.exclude(one, [1]), 3)] == [2, 0]


def test_popularity_counts_by_rows_and_by_ids_agree():
    by_rows = popularity.counts_of_rows([np.array([0, 2, 2]), np.array([2])], 4)
    by_ids = popularity.counts_by_row(popularity.counts_of_ids(["a", "c", "c", None, "c", "zz"]),
                                      {"a": 0, "b": 1, "c": 2, "d": 3}, 4)
    assert by_rows.tolist() == by_ids.tolist() == [1, 0, 3, 0]
    assert popularity.most_popular_first(by_rows).tolist() == [2, 0, 1, 3]  # ties to the lower row


def test_batched_mean_profiles_are_each_user_s_mean_profile_bit_for_bit():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    histories = [rng.integers(0, 50, size=n) for n in (1, 3, 17, 2)]
    batched = mean_profiles(vectors, histories)
    for h, row in zip(histories, batched):
        naive = sum(vectors[i].astype(np.float64) for i in h) / len(h)  # the reference: a loop over the history
        assert np.allclose(row, naive / np.linalg.norm(naive), atol=1e-6)
        # and bit for bit the single-user profile: a batch and a single request give the same lists
        assert np.array_equal(mean_profile(vectors[h])[0], row)
    with pytest.raises(ValueError, match="empty history"):
        mean_profiles(vectors, [np.array([1]), np.array([], int)])


def test_batched_recency_profiles_are_each_user_s_recency_profile_bit_for_bit(monkeypatch):
    """The weighted batch (a version's default recency: the job's validation, eval's and the
    service's batches) gives ``build_profile``'s numbers, gathered whole or a few at a time."""
    import groundrec.shared.scoring.profiles as profiles

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    histories = [rng.integers(0, 50, size=n) for n in (1, 4, 9, 2, 6)]
    times = [np.sort(rng.uniform(0, 40 * DAY, size=len(h))) for h in histories]
    whole = recency_profiles(vectors, histories, times, 3.0)
    for h, t, row in zip(histories, times, whole):
        assert np.array_equal(build_profile(vectors[h], "recency", t, None, 3.0)[0], row)
        assert not np.allclose(row, mean_profile(vectors[h])[0]) or len(h) == 1  # the times count
    monkeypatch.setattr(profiles, "GATHER_ROWS", 5)
    assert np.array_equal(recency_profiles(vectors, histories, times, 3.0), whole)
    assert np.array_equal(recency_profiles(vectors, histories, times, 0.0), mean_profiles(vectors, histories))


def test_mean_profiles_gather_a_few_histories_at_a_time_with_the_same_numbers(monkeypatch):
    """Histories' vectors are gathered about GATHER_ROWS at a time (whole histories, at least
    one): the profiles are those of one gather, bit for bit, however the histories fall."""
    import groundrec.shared.scoring.profiles as profiles

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    histories = [rng.integers(0, 50, size=n) for n in (5, 1, 9, 3, 3, 12, 2, 7)]
    whole = mean_profiles(vectors, histories)

    class Gathers(np.ndarray):  # the vectors, recording how many rows each gather takes
        taken: list = []

        def __getitem__(self, rows):
            Gathers.taken.append(len(rows))
            return np.asarray(self)[rows]

    for rows in (1, 4, 5, 6, 13, 100):  # below, at and across the histories' sizes
        monkeypatch.setattr(profiles, "GATHER_ROWS", rows)
        Gathers.taken = []
        assert np.array_equal(mean_profiles(vectors.view(Gathers), histories), whole)
        assert sum(Gathers.taken) == sum(map(len, histories))
        assert max(Gathers.taken) <= max(rows, 12)  # one history longer than the limit goes alone


def test_collaborative_queries_count_repeats_once_and_agree_batched_or_alone():
    rng = np.random.default_rng(1)
    query_side = rng.normal(size=(60, 6)).astype(np.float32)
    histories = [[5, 3, 5, 9, 3], [], [7], [2, 2, 2], list(range(40, 0, -3))]
    batched = collab_queries(query_side, histories)
    assert batched.dtype == np.float32 and batched.shape == (5, 6)
    assert not batched[1].any() and np.isclose(np.linalg.norm(batched[0]), 1.0)
    assert np.allclose(batched[0], query_side[[3, 5, 9]].sum(0) / np.linalg.norm(query_side[[3, 5, 9]].sum(0)))
    for h, row in zip(histories, batched):
        naive = sum((query_side[i].astype(np.float64) for i in set(h)), np.zeros(6))  # each item once
        assert np.allclose(row, naive / (np.linalg.norm(naive) or 1.0), atol=1e-6)
        assert np.array_equal(collab_queries(query_side, [h])[0], row)
    assert np.array_equal(batched[0], collab_queries(query_side, [np.array([9, 3, 5])])[0])


def test_wide_collaborative_queries_are_summed_a_few_users_at_a_time_with_the_same_sums():
    """An exact model's query side is thousands wide: a batch's history rows are gathered for a
    few users at a time (``GATHER_BYTES``), each user's sum the one it gets alone, recency too."""
    rng = np.random.default_rng(2)
    query_side = rng.normal(size=(300, 4096)).astype(np.float32)  # 64 rows per MB: groups of 1-3 users
    histories = [rng.integers(0, 300, size=n).tolist() for n in (30, 5, 70, 0, 12, 40, 1, 25)]
    for half_life in (0.0, 4.0):
        batched = collab_queries(query_side, histories, half_life)
        for h, row in zip(histories, batched):
            assert np.array_equal(collab_queries(query_side, [h], half_life)[0], row)
            age = {item: n for n, item in reversed(list(enumerate(reversed(h))))}  # each item's newest place
            naive = sum((query_side[i].astype(np.float64) * (0.5 ** (a / half_life) if half_life else 1.0)
                         for i, a in age.items()), np.zeros(4096))
            assert np.allclose(row, naive / (np.linalg.norm(naive) or 1.0), atol=1e-5)


def test_a_hybrid_score_is_content_cosine_plus_weight_times_collaborative():
    rng = np.random.default_rng(2)
    content, item = rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(30, 3)).astype(np.float32)
    profile, query = rng.normal(size=(1, 4)).astype(np.float32), rng.normal(size=(1, 3)).astype(np.float32)
    weight = 0.7
    scores = hybrid_queries(profile, query, None) @ index_rows(content, weight * item, None).T
    assert np.allclose(scores, profile @ content.T + weight * (query @ item.T), atol=1e-5)
    assert index_rows(content, None, None) is content  # content only: the embeddings themselves


def test_projected_index_rows_and_queries_keep_the_full_width_product_through_the_projection():
    rng = np.random.default_rng(3)
    content, weighted = rng.normal(size=(200, 4)).astype(np.float32), rng.normal(size=(200, 3)).astype(np.float32)
    to_item, to_query = rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(7, 4)).astype(np.float32)
    rows = index_rows(content, weighted, to_item, chunk=64)  # in chunks, from the two blocks
    assert np.allclose(rows, np.hstack([content, weighted]) @ to_item, atol=1e-5)
    profiles, queries = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    searched = hybrid_queries(profiles, queries, to_query) @ rows.T
    effective = Projection(to_item, to_query).effective(content, weighted)
    assert np.allclose(searched, hybrid_queries(profiles, queries, None) @ effective.T, atol=1e-3)


def test_the_core_imports_no_heavy_library():
    code = ("import sys, groundrec.shared.scoring.collab, groundrec.shared.scoring.ranking, "
            "groundrec.shared.scoring.popularity; "
            "print(sorted(m for m in ('torch', 'transformers', 'ray', 'faiss', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- profiles (moved from the retriever's tests: they are the core's) ---------------------
DAY = 86_400.0


def _angles(degrees):
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def test_mean_profile_is_the_normalised_mean():
    p = mean_profile(_angles([0, 90]))
    assert np.allclose(p, [[math.sqrt(0.5), math.sqrt(0.5)]], atol=1e-6)


def test_recency_weights_halve_per_half_life():
    w = recency_weights(np.array([0.0, DAY, 2 * DAY]), half_life_days=1.0)
    assert np.allclose(w, [0.25, 0.5, 1.0])
    p = build_profile(_angles([0, 90]), "recency", timestamps=np.array([0.0, DAY]), half_life_days=1.0)
    assert np.allclose(p[0], np.array([0.5, 1.0]) / math.hypot(0.5, 1.0), atol=1e-6)


def test_weighted_profile_and_its_errors():
    p = build_profile(_angles([0, 90]), "weighted", weights=np.array([3.0, 1.0]))
    assert np.allclose(p[0], np.array([3.0, 1.0]) / math.hypot(3, 1), atol=1e-6)
    with pytest.raises(ValueError, match="needs a weight"):
        build_profile(_angles([0]), "weighted")
    with pytest.raises(ValueError, match=">= 0"):
        build_profile(_angles([0, 90]), "weighted", weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="needs a timestamp"):
        build_profile(_angles([0]), "recency")
    with pytest.raises(ValueError, match="unknown profile strategy"):
        build_profile(_angles([0]), "median")


def test_multi_interest_finds_both_clusters_largest_first():
    history = _angles([0, 2, 4, 88, 90])
    centres = multi_interest(history, n_interests=2)
    assert centres.shape == (2, 2)
    assert np.degrees(np.arctan2(centres[0, 1], centres[0, 0])) == pytest.approx(2, abs=0.5)
    assert np.degrees(np.arctan2(centres[1, 1], centres[1, 0])) == pytest.approx(89, abs=0.5)
    assert multi_interest(_angles([10, 10]), n_interests=3).shape == (1, 2)  # one distinct point


def test_a_recency_half_life_weights_each_distinct_item_by_its_latest_position():
    rng = np.random.default_rng(1)
    query_side = rng.normal(size=(5, 3)).astype(np.float32)
    history = [0, 1, 0, 4]  # ages from the end: 4 -> 0, item 0 -> 1 (its latest), 1 -> 2
    want = 0.5 * query_side[0] + 0.25 * query_side[1] + 1.0 * query_side[4]
    got = collab_queries(query_side, [history], half_life=1.0)[0]
    assert np.allclose(got, want / np.linalg.norm(want), atol=1e-6)
    # no half-life: every distinct item alike, as before; a long half-life tends to it
    flat = collab_queries(query_side, [history])[0]
    assert np.allclose(flat, collab_queries(query_side, [[0, 1, 4]])[0])
    assert np.allclose(collab_queries(query_side, [history], half_life=1e9)[0], flat, atol=1e-6)
    # batched and one at a time: the same numbers
    histories = [history, [], [3, 3, 2], np.array([4, 0])]
    batched = collab_queries(query_side, histories, half_life=2.0)
    for h, row in zip(histories, batched):
        assert np.array_equal(collab_queries(query_side, [h], half_life=2.0)[0], row)


def test_at_most_per_keeps_score_order_and_every_limit():
    ranked = [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6), (4, 0.5), (5, 0.4)]
    product = np.array([7, 7, 8, 7, -1, 8])  # -1: no group, never limited
    colour = np.array([1, 2, 1, 1, 1, 2])
    assert ranking.at_most_per(ranked, [product], [1], 4) == [(0, 0.9), (2, 0.7), (4, 0.5)]
    assert ranking.at_most_per(ranked, [product], [2], 3) == [(0, 0.9), (1, 0.8), (2, 0.7)]
    # two groupings: both limits hold
    assert ranking.at_most_per(ranked, [product, colour], [1, 1], 6) == [(0, 0.9), (5, 0.4)]


def test_lift_adds_each_weight_to_the_new_items_only():
    new = popularity.new_items(np.array([3.0, 0.0, 1.0, 0.0]))
    assert new.tolist() == [1, 3]
    vector = ranking.lift(np.zeros(4, np.float32), 0.5, new)
    assert vector.tolist() == [0.0, 0.5, 0.0, 0.5]
    matrix = ranking.lift(np.zeros((2, 4), np.float32), [0.0, 2.0], new)
    assert matrix.tolist() == [[0, 0, 0, 0], [0, 2, 0, 2]]
    assert ranking.lift(np.ones(4), 1.0, np.array([], np.intp)).tolist() == [1, 1, 1, 1]


def test_reserve_keeps_places_for_the_best_new_items_in_score_order():
    ranked = [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6)]
    new = {7, 8, 9, 2}
    fresh = [(2, 0.7), (8, 0.3), (7, 0.2), (9, 0.1)]  # the new items, best first (2 is already in the list)
    # two places: item 2 holds one, the best new item not in the list (8) replaces the lowest other (3)
    assert ranking.reserve(ranked, fresh, 4, 2, new) == [(0, 0.9), (1, 0.8), (2, 0.7), (8, 0.3)]
    assert ranking.reserve(ranked, fresh, 4, 3, new) == [(0, 0.9), (2, 0.7), (8, 0.3), (7, 0.2)]
    assert ranking.reserve(ranked, fresh, 4, 1, new) == ranked  # item 2 already fills the place
    assert ranking.reserve(ranked, fresh, 4, 0, new) == ranked
    # a short list takes the new items in its free places first
    assert ranking.reserve(ranked[:2], fresh, 4, 2, new) == [(0, 0.9), (1, 0.8), (2, 0.7), (8, 0.3)]
    # fewer new items than places: what there is
    assert ranking.reserve(ranked, [(9, 0.1)], 4, 3, {9}) == [(0, 0.9), (1, 0.8), (2, 0.7), (9, 0.1)]


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 40)), elements=VALUES.filter(np.isfinite)),
       st.data())
def test_top_k_matrix_with_places_for_new_items_holds_them_and_the_best_others(scores, data):
    n = scores.shape[1]
    new = np.array(sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n)))))
    k = data.draw(st.integers(1, n))
    slots = data.draw(st.integers(0, k))
    lists = ranking.top_k_matrix(scores.copy(), k, new_rows=new, slots=slots)
    plain = ranking.top_k_matrix(scores.copy(), k)
    for row, got, best in zip(scores, lists, plain):
        got = got[got >= 0].tolist()
        assert len(got) == len(set(got)) == k
        assert sum(r in set(new.tolist()) for r in got) >= min(slots, len(new))
        others = [r for r in got if r not in set(new.tolist())]
        assert others == [r for r in best.tolist() if r not in set(new.tolist())][:len(others)]  # the best others
        held = [r for r in got if r in set(new.tolist())]
        assert held == sorted(new.tolist(), key=lambda r: (-row[r], r))[:len(held)]  # and the best new items
        assert [row[r] for r in got] == sorted((row[r] for r in got), reverse=True)  # score order


@settings(max_examples=300, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(2, 60)), elements=BLENDED),
       arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(2, 60)), elements=BLENDED),
       st.lists(st.sampled_from([0.0, 0.01, 0.3, 1.0, 3.0, 100.0, 1e-30]), min_size=1, max_size=4), st.data())
def test_target_in_top_k_of_blends_counts_as_the_full_blend(first, second, weights, data):
    """The learn stage's per-weight count over the items near the target agrees with counting
    over every item of ``first + w * second``, ties and rounding included."""
    rows, n = min(len(first), len(second)), min(first.shape[1], second.shape[1])
    first, second = first[:rows, :n].copy(), second[:rows, :n].copy()
    targets = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=rows, max_size=rows)))
    seen = [np.array(sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=5))) - {t})) for t in targets]
    k = data.draw(st.integers(1, n))
    got = ranking.target_in_top_k_of_blends(first.copy(), second.copy(), seen, targets, weights, k)
    for j, w in enumerate(weights):
        assert got[j].tolist() == ranking.target_in_top_k(first + w * second, seen, targets, k).tolist(), w


def test_a_blend_that_rounds_two_scores_together_breaks_the_tie_by_row():
    # item 0 is below the target (item 1) on both parts, yet 1 + 0.01 x 100 and its neighbour
    # round to one float32: the tie puts item 0 first, so the target is not the top 1
    first = np.array([[1.0, np.nextafter(np.float32(1), np.float32(2))]], np.float32)
    second = np.array([[100.0, np.nextafter(np.float32(100), np.float32(200))]], np.float32)
    blended = first + 0.01 * second
    assert blended[0, 0] == blended[0, 1] and not ranking.target_in_top_k(blended, [[]], np.array([1]), 1)[0]
    assert ranking.target_in_top_k_of_blends(first, second, [[]], np.array([1]), [0.01], 1).tolist() == [[False]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=40), max_size=8), st.sampled_from([0.0, 1.0, 2.5, 40.0]))
def test_recency_parts_are_each_historys_distinct_items_weighted_by_their_latest_position(histories, half_life):
    """The batch's flat parts are, history after history, what a Python walk of each one gives."""
    items, weights, counts = recency_parts(histories, half_life)
    assert counts.tolist() == [len(set(h)) for h in histories]
    at = 0
    for h, n in zip(histories, counts):
        age: dict[int, int] = {}
        for position, item in enumerate(reversed(h)):  # the newest item is 0 items old
            age.setdefault(item, position)
        assert items[at:at + n].tolist() == sorted(age)
        if half_life:
            assert np.allclose(weights[at:at + n], [0.5 ** (age[i] / half_life) for i in sorted(age)], rtol=1e-6)
        at += n
    assert weights is None if not half_life else len(weights) == len(items) == at


def test_excluding_seen_rows_given_as_arrays_sets_or_lists_is_the_same():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(4, 30)).astype(np.float32)
    seen = [np.array([3, 7, 7]), np.array([]), np.array([0, 29], np.int32), np.arange(5)]  # an empty float array too
    by_array = ranking.exclude(scores.copy(), seen)
    assert np.array_equal(by_array, ranking.exclude(scores.copy(), [set(s.astype(int).tolist()) for s in seen]))
    assert np.isneginf(by_array[0, [3, 7]]).all() and np.isfinite(by_array[1]).all() and np.isneginf(by_array[3, :5]).all()
    assert np.isfinite(by_array).sum() == 120 - 2 - 2 - 5
