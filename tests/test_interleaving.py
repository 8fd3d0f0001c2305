"""Team-Draft interleaving (groundrec.online.interleaving): properties over random lists."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from groundrec.online.interleaving import team_draft

ranked = st.lists(st.sampled_from([f"i{j}" for j in range(12)]), unique=True, max_size=10)


@settings(max_examples=300, deadline=None)
@given(a=ranked, b=ranked, k=st.integers(0, 25), seed=st.integers(0, 2**32 - 1))
def test_team_draft_properties(a, b, k, seed):
    items, teams = team_draft(a, b, k, random.Random(seed))
    assert len(items) == len(teams) == min(k, len(set(a) | set(b)))
    assert len(set(items)) == len(items)
    for item, team in zip(items, teams):
        assert item in ({"a": a, "b": b}[team] if team else set(a) | set(b))
    drafted = teams.index(None) if None in teams else len(teams)
    assert None not in teams[drafted:drafted] + teams[:drafted] and set(teams[drafted:]) <= {None}
    if drafted < len(items):  # filled once one arm had nothing left to add
        assert set(a) <= set(items[:drafted]) or set(b) <= set(items[:drafted])
    for team, ranking in (("a", a), ("b", b)):
        picks = [i for i, t in zip(items, teams) if t == team]
        assert picks == sorted(picks, key=ranking.index)  # each arm's picks in its own order
        # an arm always drafts its best item not yet taken: everything it ranks above a pick is in the list before it
        for n, (item, t) in enumerate(zip(items, teams)):
            if t == team:
                assert set(ranking[:ranking.index(item)]) <= set(items[:n])
    # teams balanced within one at each round's end, while both arms still had items to add
    for end in range(2, len(items) + 1, 2):
        left_a = set(a) - set(items[:end])
        left_b = set(b) - set(items[:end])
        if left_a and left_b:
            assert abs(teams[:end].count("a") - teams[:end].count("b")) <= 1
            assert teams[:end].count("a") == teams[:end].count("b")


def test_same_seed_same_list_and_both_arms_draft_first():
    a = [f"a{j}" for j in range(10)]
    b = [f"b{j}" for j in range(10)]
    assert team_draft(a, b, 10, random.Random(7)) == team_draft(a, b, 10, random.Random(7))
    firsts = {team_draft(a, b, 10, random.Random(s))[1][0] for s in range(20)}
    assert firsts == {"a", "b"}


def test_a_shared_top_item_is_taken_once_and_named_arms():
    items, teams = team_draft(["x", "p", "q"], ["x", "r", "s"], 4, random.Random(0), names=("old", "new"))
    assert items.count("x") == 1 and len(items) == 4 and set(teams) == {"old", "new"}
    assert items[0] == "x"


def test_a_shorter_list_earns_its_rival_no_credit_for_the_places_it_could_not_fill():
    """Team Draft ends where one list does: the longer list's remaining items fill the list,
    credited to neither arm (as a longer list's arm it took 7 of 10 credited places whatever
    the lists' quality)."""
    long, short = [f"a{j}" for j in range(10)], ["b0", "b1", "b2"]
    for seed in range(200):
        items, teams = team_draft(long, short, 10, random.Random(seed))
        assert len(items) == 10 and teams.count("b") == 3 and teams.count("a") in (3, 4)
        assert teams[teams.index(None):] == [None] * teams.count(None)
