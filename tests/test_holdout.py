"""The learn stage's validation set (offline/holdout.py): one last new item per user where
enough users have one, else up to the last few new items of every user, scored per user."""

import numpy as np

from groundrec.offline.holdout import MAX_PER_USER, hold_out_last, hold_out_recent


def _h(*items):
    return np.array(items, np.int64)


def test_with_enough_users_each_holds_out_its_last_item_as_before():
    histories = [_h(1, 2, 3), _h(4, 5), _h(6, 6), _h(7, 8, 9)]  # user 2's last item is a repeat
    held = hold_out_recent(histories, 3, 3, seed=0)
    train, users, targets = hold_out_last(histories, 3, seed=0)
    assert held.users == users == [0, 1, 3] and held.targets.tolist() == targets.tolist() == [3, 5, 9]
    assert held.rows.tolist() == [0, 1, 2] and [h.tolist() for h in held.histories] == [[1, 2], [4], [7, 8]]
    assert [h.tolist() for h in held.train] == [h.tolist() for h in train] == [[1, 2], [4], [6, 6], [7, 8]]
    assert held.per_user([1.0, 0.0, 1.0]).tolist() == [1.0, 0.0, 1.0]


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


def test_with_few_users_the_items_budget_is_its_own():
    """``max_users`` decides whether users are few (here 3 users, none enough); ``max_items``
    alone sets how many items they hold out: 2 each for 6, as many as each later half allows
    (at most the most per user) for 1,000; 10 items over 3 users is 3, 3 and 4 (the one left over to a user drawn at random), not 4 each."""
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
