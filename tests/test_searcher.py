"""The one searcher (shared/scoring/searcher.py) against a naive reference: a Python sort of
(item, score) pairs by score descending, then by item row."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.searcher import Searcher, best_of


def naive(scores, k, seen=(), allowed=None, prior=None):
    """The reference ranking: every finite, unseen, allowed item, best first, ties to the lower row."""
    pairs = []
    for row, s in enumerate(scores):
        s = float(np.float32(s) + (np.float32(prior[row]) if prior is not None else np.float32(0)))
        if row in seen or (allowed is not None and not allowed[row]) or not np.isfinite(s):
            continue
        pairs.append((row, s))
    return sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]


def naive_places(ranked_all, k, slots, new):
    """The reference for kept places: the best k, then the best new items not in it replace its
    lowest others until it holds ``slots`` new items (or no new item is left)."""
    top = ranked_all[:k]
    have = sum(r in new for r, _ in top)
    extra = [p for p in ranked_all[k:] if p[0] in new][:max(slots - have, 0)]
    others = [p for p in top if p[0] not in new]
    keep_new = [p for p in top if p[0] in new]
    drop = max(len(top) + len(extra) - k, 0)
    kept_others = others[:max(len(others) - drop, 0)]
    return sorted(keep_new + kept_others + extra, key=lambda p: (-p[1], p[0]))[:k]


# Scores on a coarse grid so that ties are frequent.
scores_st = st.lists(st.integers(-4, 4), min_size=1, max_size=30).map(lambda v: np.array(v, np.float32) / 4)
row12 = st.lists(st.integers(-4, 4), min_size=12, max_size=12).map(lambda v: np.array(v, np.float32) / 4)


def test_ties_go_to_the_lower_row_untied_and_tied():
    s = Searcher(4)
    assert [r for r, _ in s.rank(np.array([0.1, 0.9, 0.5, 0.7], np.float32), 3, set())] == [1, 3, 2]
    tied = np.array([0.5, 0.9, 0.5, 0.5], np.float32)
    assert [r for r, _ in s.rank(tied, 3, set())] == [1, 0, 2]  # of three tied items, the two lowest rows
    assert [r for r, _ in s.rank(tied.copy(), 3, {0})] == [1, 2, 3]
    matrix = np.stack([tied, tied[::-1].copy()])
    assert s.top_matrix(matrix, 2).tolist() == [[1, 0], [2, 0]]


@settings(max_examples=200, deadline=None)
@given(scores_st, st.integers(1, 8), st.sets(st.integers(0, 29), max_size=5), st.booleans(), st.booleans())
def test_rank_is_the_naive_ranking(scores, k, seen, filtered, with_prior):
    n = len(scores)
    seen = {r for r in seen if r < n}
    allowed = (np.arange(n) % 3 != 1) if filtered else None
    prior = (np.arange(n, dtype=np.float32) % 2) / 8 if with_prior else None
    got = Searcher(n).rank(scores.copy(), k, seen, allowed, prior)
    assert got == naive(scores, k, seen, allowed, prior)


@settings(max_examples=200, deadline=None)
@given(st.lists(row12, min_size=1, max_size=5), st.integers(1, 6),
       st.integers(0, 3))
def test_rank_rows_is_the_naive_ranking_with_places(rows, k, slots):
    scores = np.stack(rows)
    new = np.array([2, 5, 7, 11])
    seen = [{(i * 5) % 12} for i in range(len(rows))]
    lists = Searcher(12, new).rank_rows(scores.copy(), [k] * len(rows), seen, [slots] * len(rows))
    for i, got in enumerate(lists):
        want = naive(scores[i], 12, seen[i])
        assert got == (naive_places(want, k, slots, set(new.tolist())) if slots else want[:k])


@settings(max_examples=100, deadline=None)
@given(row12, st.integers(1, 6), st.integers(0, 3))
def test_one_query_keeps_the_same_places_as_a_batch(scores, k, slots):
    new = np.array([0, 3, 4, 9])
    searcher = Searcher(12, new)
    want = naive_places(naive(scores, 12, {1}), k, slots, set(new.tolist())) if slots else naive(scores, k, {1})
    assert searcher.rank(scores.copy(), k, {1}, slots=slots) == want


def test_merge_takes_the_best_score_per_item_over_the_profile_rows():
    scores = np.array([[0.9, 0.5, 0.4], [0.8, 0.7, 0.1]], np.float32)
    ids = np.array([[3, 1, 0], [1, 2, -1]])
    prior = np.array([0.0, 0.0, 0.25, 0.0], np.float32)
    got = Searcher.merge(scores, ids, 3, {0}, prior)
    assert [r for r, _ in got] == [2, 3, 1]  # 2: 0.7 + 0.25; item 1's best is 0.8 from the second row
    assert np.allclose([s for _, s in got], [0.95, 0.9, 0.8])
    assert Searcher.merge(scores, ids, 2, set()) == [(3, float(np.float32(0.9))), (1, float(np.float32(0.8)))]


def test_popular_fallback_by_count_unseen_allowed_ties_to_lower_row():
    s = Searcher(5, counts=np.array([3.0, 7.0, 3.0, 0.0, 7.0]))
    assert [r for r, _ in s.popular(4, set())] == [1, 4, 0, 2]
    assert [r for r, _ in s.popular(3, {4}, allowed=np.array([True, True, False, True, True]))] == [1, 0, 3]
    assert s.popular(1, set())[0][1] == float(np.log1p(np.float32(7.0)))
    s.set_counts(np.array([0.0, 0.0, 0.0, 9.0, 0.0]))
    assert [r for r, _ in s.popular(2, set())] == [3, 0]


def test_the_popular_list_with_max_per_reads_past_a_head_of_one_value():
    """max_per took its k from the 16k most popular only: when they all share a value the
    list came back with one item."""
    from functools import partial

    from groundrec.shared.scoring import ranking

    s = Searcher(100, counts=np.array([100.0 - n for n in range(100)]))
    groups = np.where(np.arange(100) < 40, 0, np.arange(100))  # the 40 most popular: one value
    pick = partial(ranking.select, groups=[groups], limits=[1])
    assert [r for r, _ in s.popular(2, set(), pick=pick)] == [0, 40]


def test_top_matrix_gives_users_without_a_profile_the_popular_list():
    s = Searcher(4, counts=np.array([1.0, 5.0, 2.0, 0.0]))
    scores = np.array([[0.1, 0.2, 0.3, 0.4], [9.0, 0.0, 0.0, 0.0]], np.float32)
    assert s.top_matrix(scores.copy(), 2, [np.array([3]), np.array([1])]).tolist() == [[2, 1], [0, 2]]
    assert s.top_matrix(scores.copy(), 2, [np.array([3]), np.array([1])], no_profile=[1]).tolist() == [[2, 1], [2, 0]]
    assert s.top_matrix(scores.copy(), 3, [np.array([3]), np.array([0])], no_profile=[1]).tolist() == [[2, 1, 0], [1, 2, 3]]


def test_best_of_is_the_best_row_of_a_multi_interest_profile():
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    profiles = np.array([[1, 0], [0, 1]], np.float32)
    assert best_of(vectors, profiles).tolist() == [1.0, 1.0, np.float32(0.8)]
    s = Searcher(3, scorer=lambda p: p @ vectors.T)
    assert np.array_equal(s.scores_of(profiles), best_of(vectors, profiles))


def test_take_with_a_pick_widens_until_it_has_k():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], np.float32)
    groups = [np.array([0, 0, 0, 0, 0, 0, 0, 0, 1])]  # the second group's only item is last
    got = Searcher.take(scores, 2, lambda ranked, k: ranking.at_most_per(ranked, groups, [1], k))
    assert [r for r, _ in got] == [0, 8]


def test_a_pick_that_can_never_fill_k_reads_the_ranking_in_linear_memory():
    """max_per 1 over a column of two values can never fill k = 10: the head grows four-fold
    until it holds the whole catalog, and with diversity ``select`` built a candidates x
    candidates matrix of it (an H&M request took gigabytes and seconds, and the compute
    process was killed as hung; here 200,000 candidates: 320 GB)."""
    scores = np.random.default_rng(0).random(200_000).astype(np.float32)
    brand = [np.arange(200_000) % 2]
    vectors = np.eye(200_000, 8, dtype=np.float32)
    seen = []

    def pick(ranked, k):
        seen.append(len(ranked))
        return ranking.select(ranked, k, brand, [1], vectors, diversity=0.3)
    got = Searcher.take(scores, 10, pick)
    assert seen[-1] == 200_000 and len(got) == 2 and len({int(brand[0][r]) for r, _ in got}) == 2
    fillable = [np.arange(200_000) % 12]  # 12 brands, each first found far down the ranking: filled, as before
    order = np.argsort(-scores)
    fillable[0][order[:5_000]] = 0
    got = Searcher.take(scores, 10, lambda ranked, k: ranking.select(ranked, k, fillable, [1]))
    assert len(got) == 10


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8), st.floats(0.05, 0.95), st.integers(1, 3))
def test_diversity_with_max_per_is_greedy_mmr_over_the_items_the_limits_allow(seed, k, diversity, limit):
    """``select``: each step takes the allowed candidate of best (1 - d) x score - d x its
    largest cosine to the items taken (the rule, written out here one step at a time)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(30, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = [rng.integers(-1, 4, 30)]
    ranked = sorted(((r, float(s)) for r, s in enumerate(rng.random(30))), key=lambda p: -p[1])
    want, count = [], {}
    while len(want) < k:
        allowed = [(r, s) for r, s in ranked if (r, s) not in want
                   and (groups[0][r] < 0 or count.get(groups[0][r], 0) < limit)]
        if not allowed:
            break
        near = lambda r: max((float(vectors[r] @ vectors[t]) for t, _ in want), default=0.0)  # noqa: E731
        best = max(allowed, key=lambda p: (1 - diversity) * p[1] - diversity * max(near(p[0]), 0.0))
        want.append(best)
        count[groups[0][best[0]]] = count.get(groups[0][best[0]], 0) + 1
    got = ranking.select(ranked, k, groups, [limit], vectors, diversity)
    assert [r for r, _ in got] == [r for r, _ in want]


def test_a_list_holding_the_hybrid_s_new_items_keeps_its_max_per():
    """The encoder's list of one item per brand took the hybrid's new item of a brand it
    already held: ``holding_new_of`` did not ask the list's pick (max_per), as kept places do."""
    brand = [np.array([0, 1, 2, 3, 4, 0])]  # item 5 (new) is of item 0's brand
    searcher = Searcher(6, np.array([5]))

    def pick(ranked, k):
        return ranking.select(ranked, k, brand, [1])
    ranked = [(0, 0.9), (1, 0.8), (2, 0.7)]
    held = searcher.holding_new_of(ranked, [5, 3], 3, lambda rows: np.full(len(rows), 0.4), pick)
    assert [r for r, _ in held] == [0, 1, 2]  # brand 0 is taken: the new item stays out
    unlimited = searcher.holding_new_of(ranked, [5, 3], 3, lambda rows: np.full(len(rows), 0.4))
    assert [r for r, _ in unlimited] == [0, 1, 5]  # without a pick it is held, as before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-8, 8), min_size=40, max_size=40), min_size=1, max_size=6),
       st.lists(st.integers(1, 4), min_size=6, max_size=6), st.integers(1, 3), st.integers(0, 2))
def test_rank_rows_with_max_per_is_rank_one_row_at_a_time(rows, ks, limit, slots):
    """A batch's picks (max_per) give each row the list ``rank`` gives it alone, widening
    included: items 0..31 fall in two groups of 16 and score above the others, so a head of
    4k holds too few items to pick; 32..39 have no group (never limited)."""
    scores = np.stack([np.array(r, np.float32) / 8 for r in rows])
    scores[:, :32] += 2
    groups = [np.array([r // 16 for r in range(32)] + [-1] * 8)]
    new = np.array([3, 17, 25, 38])
    searcher = Searcher(40, new)

    def pick(ranked, k):
        return ranking.select(ranked, k, groups, [limit])
    ks = ks[:len(rows)]
    seen = [{(i * 7) % 40} for i in range(len(rows))]
    picks = [pick if i % 3 else None for i in range(len(rows))]  # every third row: the best k
    got = searcher.rank_rows(scores.copy(), ks, seen, [slots] * len(rows), picks)
    for i in range(len(rows)):
        assert got[i] == searcher.rank(scores[i].copy(), ks[i], seen[i], pick=picks[i], slots=slots)
        if picks[i]:  # and the limit holds where places for new items did not add to a group
            codes = [groups[0][r] for r, _ in got[i] if r not in searcher.is_new and groups[0][r] >= 0]
            assert all(codes.count(c) <= limit for c in codes)


def test_a_pick_that_can_never_fill_k_reads_a_bounded_head():
    """Three values, max_per 1, k=5 (the popular and latest lists): it walked the whole order
    (0.86 s a request on a million items); now its first 16k, then 64k more, and stays short."""
    from functools import partial

    from groundrec.shared.scoring import ranking

    pick = partial(ranking.select, groups=[np.arange(10_000) % 3], limits=[1])
    usable = iter(range(10_000))
    assert len(ranking.picked_from(((i, 1.0) for i in usable), 5, pick)) == 3 and next(usable) == 400


def test_a_place_kept_for_a_new_item_respects_max_per():
    """The best new items were put in after the pick, whatever its limits: a list with
    max_per 1 held two variants of one product (rows 0 and 1 below)."""
    from functools import partial

    from groundrec.shared.scoring import ranking

    scores = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    s = Searcher(8, new_rows=np.array([1, 7]))
    pick = partial(ranking.select, groups=[np.arange(8) // 2], limits=[1])  # variants: (0, 1), (2, 3), ...
    got = [r for r, _ in s.rank(scores.copy(), 3, set(), pick=pick, slots=1)]
    assert got == [0, 2, 7]  # the new item of a group with room takes the place, not row 1 beside row 0
    batch = s.rank_rows(scores[None, :].copy(), [3], None, [1], [pick])[0]
    assert [r for r, _ in batch] == got


def test_a_versions_recent_prior_is_added_to_one_query_and_to_a_batch_alike():
    """``recent_prior`` (a version's own recent-popularity prior) is in every list: the single
    path's ``prior`` and a batch's ``rank_asks`` rank the same items with the same scores,
    and without it the lists differ."""
    from groundrec.shared.scoring.searcher import Ask

    rng = np.random.default_rng(0)
    scores = rng.random((6, 40)).astype(np.float32)
    counts = np.zeros(40)
    counts[[3, 17, 29]] = [50, 20, 5]
    recent = Searcher.recent_prior_of(0.3, counts)
    assert Searcher.recent_prior_of(0.0, counts) is None and Searcher.recent_prior_of(0.3, None) is None
    np.testing.assert_allclose(recent, 0.3 * np.log1p(counts), rtol=1e-6)
    with_prior, plain = Searcher(40, recent_prior=recent), Searcher(40)
    seen = [{1, 2}] * len(scores)
    batch = with_prior.rank_asks(scores.copy(), [Ask(5, s, popularity_weight=0.0) for s in seen])
    for row, s, listed in zip(scores, seen, batch):
        one = with_prior.rank(row, 5, s, prior=with_prior.prior(0.0))
        assert one == listed and 3 in [r for r, _ in one]
        want = sorted(((r, float(row[r] + recent[r])) for r in range(40) if r not in s), key=lambda p: (-p[1], p[0]))
        assert [r for r, _ in one] == [r for r, _ in want[:5]]
        assert np.allclose([v for _, v in one], [v for _, v in want[:5]], atol=1e-6)
    assert plain.prior(0.0) is None
    assert batch != plain.rank_asks(scores.copy(), [Ask(5, s) for s in seen])


def test_recent_counts_count_the_last_days_before_the_latest_interaction():
    from groundrec.shared.scoring.popularity import recent_counts, recent_histories

    day = 86_400.0
    items = np.array([0, 1, 1, 2, 2, 2])
    times = np.array([0, 5, 30, 31, 40, 40]) * day
    assert recent_counts(items, times, 4, 10).tolist() == [0, 1, 3, 0]  # day 30 on: the last 10 days before day 40
    assert recent_counts(items, times, 4, 100).tolist() == [1, 2, 3, 0]
    assert recent_counts(items[:0], times[:0], 4, 10).tolist() == [0, 0, 0, 0]
    # histories may be prefixes of their times (a held-out user's training part): the rest is not counted
    histories, each = [np.array([0, 1]), np.array([1, 2])], [np.array([0, 30]) * day, np.array([5, 40, 41]) * day]
    assert recent_histories(histories, each, 3, 10).tolist() == [0, 1, 1]
    assert recent_histories([np.array([], np.int64)], [np.array([])], 3, 10).tolist() == [0, 0, 0]


def test_recent_as_of_counts_each_users_days_before_their_own_time():
    """Validation's counts: for each user only what happened before their time (their own
    held-out item and every later purchase of anyone are not counted)."""
    from groundrec.shared.scoring.popularity import RecentAsOf, recent_counts

    day = 86_400.0
    items = np.array([0, 1, 2, 2, 1, 0])
    times = np.array([50, 10, 20, 29, 30, 31]) * day  # in no order
    counts = RecentAsOf(items, times, np.array([30, 31, 100]) * day, 3, 10)
    assert counts(np.array([0, 1, 2])).tolist() == [[0, 0, 2], [0, 1, 1], [0, 0, 0]]
    assert counts(np.array([1])).tolist() == [[0, 1, 1]]
    # just after the latest interaction, with a window reaching the first: what the version counts
    whole = RecentAsOf(items, times, np.array([50 * day + 1]), 3, 50)
    assert whole(np.array([0]))[0].tolist() == recent_counts(items, times, 3, 50).tolist() == [2, 2, 2]
