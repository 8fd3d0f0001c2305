"""Team-Draft interleaving (Radlinski, Kurup and Joachims, 2008): two arms' ranked lists merged
into one, each position credited to the arm that drafted it, so that a click says which arm
the user preferred on the same request.

Each round a coin flip picks which arm drafts first; each arm then adds its highest-ranked
item not already in the list (an item both arms rank is taken by whichever drafts it first
and skipped by the other). When one arm has nothing left to add the other keeps drafting.
The result depends only on the lists, ``k`` and the coin flips, so a generator seeded from the
recommendation id gives the same list again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Coin(Protocol):
    def random(self) -> float: ...  # random.Random and numpy's Generator both have it


def team_draft(list_a: Sequence[str], list_b: Sequence[str], k: int, rng: Coin,
               names: tuple[str, str] = ("a", "b")) -> tuple[list[str], list[str]]:
    """(items, teams): at most ``k`` distinct items from the two lists, and for each position
    the name of the arm (``names[0]`` for ``list_a``) that drafted it."""
    lists = (list_a, list_b)
    next_at = [0, 0]  # where each arm's search for its next unused item resumes
    items: list[str] = []
    teams: list[str] = []
    taken: set[str] = set()

    def draft(arm: int) -> bool:
        ranked, i = lists[arm], next_at[arm]
        while i < len(ranked) and ranked[i] in taken:
            i += 1
        next_at[arm] = i + 1
        if i >= len(ranked):
            return False
        items.append(ranked[i])
        teams.append(names[arm])
        taken.add(ranked[i])
        return True

    while len(items) < k:
        first = 0 if rng.random() < 0.5 else 1
        drafted = draft(first)
        if len(items) < k:
            drafted = draft(1 - first) or drafted
        if not drafted:
            break  # both lists used up
    return items, teams
