"""The learn stage's validation set (offline/holdout.py): each held-out user's last new items (a
block, an even share of the items budget), all found from the history before them, scored per
user."""

import numpy as np

from groundrec.offline.holdout import (MAX_PER_USER, SCORED_CELLS, hold_out_last, hold_out_recent, items_to_hold_out,
                                      split_at)


def _h(*items):
    return np.array(items, np.int64)


def test_a_budget_of_one_item_a_user_holds_out_each_user_s_last_new_item():
    histories = [_h(1, 2, 3), _h(4, 5), _h(6, 6), _h(7, 8, 9)]  # user 2's last item is a repeat
    held = hold_out_recent(histories, 3, 3, seed=0)
    train, users, targets = hold_out_last(histories, 3, seed=0)
    assert held.users == users == [0, 1, 3] and held.targets.tolist() == [t[0] for t in targets] == [3, 5, 9]
    assert held.rows.tolist() == [0, 1, 2] and [h.tolist() for h in held.histories] == [[1, 2], [4], [7, 8]]
    assert [h.tolist() for h in held.train] == [h.tolist() for h in train] == [[1, 2], [4], [6, 6], [7, 8]]
    assert held.per_user([1.0, 0.0, 1.0]).tolist() == [1.0, 0.0, 1.0]


def test_with_times_the_last_new_item_is_the_last_moment_s_new_items():
    """A basket is held out whole (its items new to the user), the history cut where it begins;
    a user of one moment, or whose last moment holds nothing new, is never drawn."""
    histories = [_h(1, 2, 3, 4, 2), _h(5, 6), _h(7, 8, 9), _h(1, 2, 1)]
    times = [_h(1, 1, 2, 2, 2), _h(3, 3), _h(1, 2, 3, 4), _h(1, 1, 2)]  # user 2's times run past the history
    train, users, targets = hold_out_last(histories, 10, seed=0, times=times)
    assert users == [0, 2] and [t.tolist() for t in targets] == [[3, 4], [9]]  # user 0's 2 was seen before
    assert [h.tolist() for h in train] == [[1, 2], [5, 6], [7, 8], [1, 2, 1]]
    drawn = hold_out_last(histories, 1, seed=3, times=times)[1]
    assert len(drawn) == 1 and drawn[0] in (0, 2)


def test_the_items_held_out_stay_within_the_scoring_budget_of_a_pass():
    assert items_to_hold_out(10_000, 3_658) == 10_000  # retail: the whole budget
    assert items_to_hold_out(10_000, 1_000_000) == SCORED_CELLS // 1_000_000 == 2_000
    assert items_to_hold_out(1_000, 1_000_000) == 1_000  # the config's own cap is kept where lower
    assert items_to_hold_out(10_000, 10 * SCORED_CELLS) == 1  # never none


def test_many_users_a_random_max_users_of_them_hold_out_a_block_each():
    """More users with a new item than ``max_users``: a random ``max_users`` of them, each a block
    of their last new items (an even share of the budget), not one item each: the horizon of
    eval's test, where one item a user chose for one step ahead."""
    histories = [np.arange(u * 100, u * 100 + 20) for u in range(10)]
    held = hold_out_recent(histories, 4, 12, seed=0)
    assert len(held.users) == 4 and held.rows.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i, u in enumerate(held.users):
        assert held.targets_by_user[i].tolist() == list(range(u * 100 + 17, u * 100 + 20))
        assert held.user_histories[i].tolist() == held.train[u].tolist() == list(range(u * 100, u * 100 + 17))
    assert held.users != hold_out_recent(histories, 4, 12, seed=1).users  # drawn by the seed
    assert [h.tolist() for u, h in enumerate(held.train) if u not in held.users] == [
        histories[u].tolist() for u in range(10) if u not in held.users]  # the others train on everything


def test_with_few_users_each_holds_out_its_last_new_items():
    """Two users with a last new item, 9 items wanted: every user with a new item in the later
    half of their history (user 2's last item is a repeat; user 3 has nothing new after the
    first) holds out up to 3 new items from that half; the user's training part ends before the
    first of them (at least half of the history), and every row of the user is that history:
    one list must find them all, the horizon eval's test measures (not one step ahead)."""
    histories = [_h(1, 2, 3, 4, 5), _h(1, 2, 1, 6, 7), _h(8, 9, 10, 8), _h(11, 11)]
    held = hold_out_recent(histories, 9, 9, seed=0)
    assert held.users == [0, 1, 2]
    assert held.targets.tolist() == [3, 4, 5, 6, 7, 10] and held.rows.tolist() == [0, 0, 0, 1, 1, 2]
    assert [h.tolist() for h in held.histories] == [[1, 2], [1, 2], [1, 2], [1, 2, 1], [1, 2, 1], [8, 9]]
    assert [h.tolist() for h in held.train] == [[1, 2], [1, 2, 1], [8, 9], [11, 11]]
    # per user: the mean of its rows (the recall of its held-out items)
    assert held.per_user([1, 0, 0, 1, 0, 1]).tolist() == [1 / 3, 0.5, 1.0]
    assert [t.tolist() for t in held.targets_by_user] == [[3, 4, 5], [6, 7], [10]]


def test_no_user_holds_out_more_than_the_most_per_user():
    n = 2 * MAX_PER_USER + 10  # a later half longer than the most per user
    held = hold_out_recent([np.arange(n)], 2000, 2000)
    assert held.targets.tolist() == list(range(n - MAX_PER_USER, n)) and held.train[0].tolist() == list(
        range(n - MAX_PER_USER))


def test_the_items_budget_is_shared_evenly_by_the_users_holding_out():
    """``max_users`` only caps the users (here 3, under it); ``max_items`` alone sets how many
    items they hold out: 2 each for 6, as many as each later half allows (at most the most per
    user) for 1,000; 10 items over 3 users is 3, 3 and 4 (the one left over to a user drawn at
    random), not 4 each."""
    histories = [np.arange(u * 100, u * 100 + 40) for u in range(3)]
    assert len(hold_out_recent(histories, 10, 6).targets) == 6
    assert len(hold_out_recent(histories, 10, 1000).targets) == 3 * min(MAX_PER_USER, 20)
    held = hold_out_recent(histories, 10, 10)
    assert sorted(np.bincount(held.rows).tolist()) == [3, 3, 4]


def test_the_budget_is_never_overshot_when_users_are_just_fewer_than_it():
    """6 users of 2 new items each (in the later half) and a budget of 7: an even share rounded
    up would hold out 2 each, 12 items; the shares hold out 7 (one each, one user a second)."""
    histories = [np.array([u * 10, u * 10 + 1, u * 10 + 2, u * 10 + 3]) for u in range(6)]
    held = hold_out_recent(histories, 100, 7)
    assert len(held.users) == 6 and len(held.targets) == 7
    assert sorted(np.bincount(held.rows).tolist()) == [1, 1, 1, 1, 1, 2]


def test_nothing_new_after_the_first_item_holds_out_nothing():
    held = hold_out_recent([_h(1, 1, 1), _h(2)], 10, 10)
    assert held.users == [] and len(held.targets) == 0 and [h.tolist() for h in held.train] == [[1, 1, 1], [2]]


def test_a_user_s_rows_scored_once_are_the_rows_scored_each_from_the_same_history():
    """``owner`` (each row's user): profiles and histories per user, each scored once, give every
    row the hits it gets when scored on its own, across chunks that never split a user."""
    from groundrec.offline import collab
    from groundrec.offline.holdout import CHUNK, published_hits, published_lists, validation_hits
    from groundrec.shared.scoring.profiles import recency_profiles

    rng = np.random.default_rng(0)
    n_items = 60
    histories = [rng.choice(n_items, 30, replace=False) for _ in range(3 * CHUNK // 10)]  # rows span chunks
    held = hold_out_recent(histories, 1000, 10 * len(histories))
    content = rng.normal(size=(n_items, 8)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    model = collab.fit(held.train, n_items, content, rank=8, reg=10.0)
    per_user, per_row = held.user_histories, held.histories
    assert len(held.targets) > CHUNK and np.bincount(held.rows).min() > 1
    once = validation_hits(model, content, recency_profiles(content, per_user), per_user, held.targets, [0.5, 2.0],
                           3.0, held.rows)
    each = validation_hits(model, content, recency_profiles(content, per_row), per_row, held.targets, [0.5, 2.0], 3.0)
    assert set(once) == set(each) and all(np.array_equal(once[k], each[k]) for k in each)
    assert 0 < once[2.0].mean() < 1  # hits and misses both
    new = np.arange(50, 60)
    fresh = ((0.0, 0), (0.3, 2))
    once = published_hits(model, content, recency_profiles(content, per_user), per_user, held.targets, 2.0, None, 3.0,
                          new, fresh, held.rows)
    each = published_hits(model, content, recency_profiles(content, per_row), per_row, held.targets, 2.0, None, 3.0,
                          new, fresh)
    assert all(np.array_equal(once[k], each[k]) for k in fresh)
    lists = published_lists(model, content, recency_profiles(content, per_user), per_user, 2.0, None, 3.0, new, 0.3,
                            2, held.rows)
    assert lists.shape == (len(held.targets), 20) and np.array_equal(lists, published_lists(
        model, content, recency_profiles(content, per_row), per_row, 2.0, None, 3.0, new, 0.3, 2))


def test_a_held_out_block_is_found_from_the_moments_before_it_never_from_its_own_basket():
    """With times, a user's training part ends where the moment of their first held-out item
    begins (the items bought with it, a basket, were its history), the block is the whole of
    that moment (not its last items in file order), and a user of one moment is not drawn (its
    share of the budget was lost)."""
    histories = [_h(1, 2, 3, 4, 5, 6), _h(7, 8, 9, 10)]
    times = [np.array([1, 2, 3, 3, 3, 3.0]), np.array([5, 5, 5, 5.0])]  # user 1: one basket, nothing before it
    held = hold_out_recent(histories, 2, 2, seed=0, times=times)  # user 0 alone can be: the budget is theirs
    assert held.users == [0] and held.train[0].tolist() == [1, 2]
    assert len(held.targets) == 2 and set(held.targets.tolist()) <= {4, 5, 6}  # its share, drawn from the basket
    drawn = {tuple(hold_out_recent(histories, 2, 2, seed=s, times=times).targets.tolist()) for s in range(20)}
    assert len(drawn) > 1  # not always the basket's last items in file order
    assert held.train[1].tolist() == [7, 8, 9, 10]  # holds out nothing: its history stays whole
    assert hold_out_recent(histories, 2, 2, seed=0).train[0].tolist() == [1, 2, 3, 4, 5]  # by position alone


def test_a_per_user_prior_reaches_each_users_rows_across_chunks(monkeypatch):
    """``published_hits`` / ``published_lists`` with a prior that is a function of the users (the
    recent prior as of each validation user's time): each row gets its own user's prior, also
    when a chunk boundary falls between users of several rows. A prior that lifts exactly each
    user's own targets finds them all; handed to the wrong users, it finds few (chance: a top
    20 of 200 items)."""
    from groundrec.offline import holdout
    from groundrec.offline.collab import CollabModel
    from groundrec.offline.learn_sequence import served_hits

    monkeypatch.setattr(holdout, "CHUNK", 5)  # several chunks, users of 2 and 3 rows straddling them
    rng = np.random.default_rng(0)
    n_items, users = 200, 9
    content = rng.normal(size=(n_items, 8)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    owner = np.repeat(np.arange(users), [2, 3] * 4 + [2])
    targets = np.arange(len(owner)) + 20  # every row its own target, none seen
    held = np.empty(users, object)
    held[:] = [np.array([u]) for u in range(users)]
    profiles = content[np.arange(users)]
    lift = np.zeros((users, n_items), np.float32)
    for row, u in enumerate(owner):
        lift[u, targets[row]] = 100.0
    asked = []

    def prior(who):
        asked.append(np.asarray(who).tolist())
        return lift[who]

    model = CollabModel(np.zeros((n_items, 2), np.float32), np.zeros((n_items, 2), np.float32), np.ones(n_items, bool))
    for weight in (0.0, 1.0):  # content alone, and a hybrid (its collaborative part zero here)
        asked.clear()
        hits = holdout.published_hits(model, content, profiles, held, targets, weight, None, owner=owner, prior=prior)
        assert hits[0.0, 0].all() and len(asked) > 1  # every row found, over several chunks
        wrong = holdout.published_hits(model, content, profiles, held, targets, weight, None, owner=owner,
                                       prior=lambda who: lift[(np.asarray(who) + 1) % users])
        assert wrong[0.0, 0].mean() < 0.5
    lists = holdout.published_lists(model, content, profiles, held, 1.0, None, 0.0, np.zeros(0, np.int64), 0.0, 0,
                                    owner, prior)
    assert all(t in row for t, row in zip(targets, lists.tolist()))
    found = served_hits(profiles[owner], content, [held[u] for u in owner], targets, prior=lambda rows: lift[owner[rows]])
    assert found.all()


def test_a_cut_in_time_ends_each_history_s_part_before_it_and_keeps_the_items_new_after_it():
    """``split_at`` (the promotion gate's window): where each history's part at or before the cut
    ends, and the items new to it after (a repeat is not new; once each); a user who only came
    after the cut has none."""
    day = 86_400.0
    histories = [np.array([0, 1, 2, 1, 3, 3]), np.array([3, 4]), np.array([5, 6])]
    times = [np.array([0.0, 10, 40, 45, 50, 51]) * day, np.array([1.0, 2]) * day, np.array([48.0, 49]) * day]
    cut, after = split_at(histories, times, 40 * day)
    assert cut == [3, 2, 0] and after == [[3], [], []]  # the interaction at the cut's time is before it