"""Team-Draft interleaving (Radlinski, Kurup and Joachims, 2008): two arms' ranked lists merged
into one, each position credited to the arm that drafted it, so that a click says which arm
the user preferred on the same request.

Each round a coin flip picks which arm drafts first; each arm then adds its highest-ranked
item not already in the list (an item both arms rank is taken by whichever drafts it first
and skipped by the other). Where one arm has nothing left to add, the draft is over (Team
Draft's own rule): the list is filled up to ``k`` from the other arm's ranking, those
positions credited to no arm (team ``None``) so that a shorter list (a strict ``max_per``, a
filter, a smaller catalog) earns its rival no credit for places it did not win. The result depends only on the lists, ``k`` and the coin flips, so a generator seeded from the
recommendation id gives the same list again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Coin(Protocol):
    def random(self) -> float: ...  # random.Random and numpy's Generator both have it


def team_draft(list_a: Sequence[str], list_b: Sequence[str], k: int, rng: Coin,
               names: tuple[str, str] = ("a", "b")) -> tuple[list[str], list[str | None]]:
    """(items, teams): at most ``k`` distinct items from the two lists, and for each position
    the name of the arm (``names[0]`` for ``list_a``) that drafted it; ``None`` for a position
    filled after the draft ended."""
    lists = (list_a, list_b)
    next_at = [0, 0]  # where each arm's search for its next unused item resumes
    items: list[str] = []
    teams: list[str | None] = []
    taken: set[str] = set()

    def left(arm: int) -> bool:
        ranked = lists[arm]
        while next_at[arm] < len(ranked) and ranked[next_at[arm]] in taken:
            next_at[arm] += 1
        return next_at[arm] < len(ranked)

    def draft(arm: int, team: str | None) -> None:
        item = lists[arm][next_at[arm]]
        items.append(item)
        teams.append(team)
        taken.add(item)

    while len(items) < k and left(0) and left(1):
        first = 0 if rng.random() < 0.5 else 1
        draft(first, names[first])
        if len(items) < k and left(1 - first):
            draft(1 - first, names[1 - first])
    for arm in (0, 1):  # the draft is over: the rest of the other arm's list, credited to no arm
        while len(items) < k and left(arm):
            draft(arm, None)
    return items, teams
