"""Popularity: interactions per item, the prior ``w x ln(1 + count)`` added to a score, and
the freshness prior of items nobody interacted with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def counts_of_rows(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    """Interactions per item row over these histories (repeats count), float64."""
    if not histories:
        return np.zeros(n_items)
    return np.bincount(np.concatenate(histories), minlength=n_items).astype(np.float64)


def recent_counts(items: np.ndarray, times: np.ndarray, n_items: int, days: float) -> np.ndarray:
    """Interactions per item row (repeats count) in the last ``days`` days up to the latest of
    ``times`` (seconds, one per interaction of ``items``), float64: what a version's
    recent-popularity prior counts (the learn stage, eval and the gate alike)."""
    items, times = np.asarray(items, np.int64), np.asarray(times, np.float64)
    if not len(items):
        return np.zeros(n_items)
    return np.bincount(items[times >= times.max() - days * 86_400.0], minlength=n_items).astype(np.float64)


def flat_histories(histories: list[np.ndarray], times: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every history's item rows and their times, one flat array each (a history may be a prefix
    of its times: a held-out user's training part)."""
    if not histories:
        return np.zeros(0, np.int64), np.zeros(0)
    return (np.concatenate([np.asarray(h, np.int64) for h in histories]),
            np.concatenate([np.asarray(t, np.float64)[:len(h)] for h, t in zip(histories, times)]))


def recent_histories(histories: list[np.ndarray], times: list[np.ndarray], n_items: int, days: float) -> np.ndarray:
    """``recent_counts`` of these histories (``flat_histories``)."""
    return recent_counts(*flat_histories(histories, times), n_items, days)


class RecentAsOf:
    """Each user's own ``recent_counts``: the interactions per item in the ``days`` days before
    the user's time ``at`` (strictly before it), of every interaction given (``items`` with
    their ``times``). Validation scores a recent prior with these, over the training parts:
    counted up to the end of the window, a held-out item would be counted from other users'
    purchases after it, which no request can see; and an item new to the training parts (lifted,
    kept a place) has no count, as a new item has none in the service."""

    def __init__(self, items: np.ndarray, times: np.ndarray, at: np.ndarray, n_items: int, days: float):
        order = np.argsort(np.asarray(times, np.float64), kind="stable")
        self.items, self.n_items = np.asarray(items, np.int64)[order], n_items
        sorted_times = np.asarray(times, np.float64)[order]
        at = np.asarray(at, np.float64)
        self.first = np.searchsorted(sorted_times, at - days * 86_400.0, side="left")
        self.last = np.searchsorted(sorted_times, at, side="left")

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """(len(users) x items) counts, float64, a row per user (an index into ``at``)."""
        out = np.zeros((len(users), self.n_items))
        for row, u in enumerate(np.asarray(users, np.int64)):
            out[row] = np.bincount(self.items[self.first[u]:self.last[u]], minlength=self.n_items)
        return out


def counts_of_ids(item_ids: Iterable) -> dict[str, float]:
    """Interactions per item id (an id column's values; nulls skipped)."""
    counts: dict[str, float] = {}
    for iid in item_ids:
        if iid is not None:
            counts[str(iid)] = counts.get(str(iid), 0) + 1
    return counts


def counts_of_file(path, column: str) -> dict[str, float]:
    """Interactions per item id in a file of interactions (Parquet, CSV or JSONL); a UserError
    naming the columns when ``column`` is not one of them."""
    from groundrec.shared.errors import UserError
    from groundrec.shared.tables import read_table

    table = read_table(path)
    if column not in table.column_names:
        raise UserError(f"interactions {path} have no column {column!r} (they have "
                        f"{table.column_names[:20]}); name the item column with --interactions-item-column "
                        "or interactions_item_column in the serve config")
    return counts_of_ids(table.column(column).to_pylist())


def counts_by_row(counts: Mapping[str, float] | None, row_of: Mapping[str, int], n_items: int) -> np.ndarray:
    """Per-id counts laid out on a version's rows (ids it does not hold are ignored)."""
    out = np.zeros(n_items, dtype=np.float64)
    for iid, c in (counts or {}).items():
        row = row_of.get(iid)
        if row is not None:
            out[row] = c
    return out


def log_prior(counts: np.ndarray) -> np.ndarray:
    """``ln(1 + count)`` per item, float32: the popularity prior before its weight."""
    return np.log1p(counts).astype(np.float32)


def new_items(counts: np.ndarray) -> np.ndarray:
    """The rows of the items with no interaction in the training window: what the freshness
    prior lifts (``ranking.lift``). A hybrid's collaborative part cannot know such an item;
    the lift lets it reach a list through its content (weight chosen on validation)."""
    return np.flatnonzero(np.asarray(counts) == 0)


def most_popular_first(counts: np.ndarray) -> np.ndarray:
    """Item rows by count, most first, ties to the lower row."""
    return np.argsort(-counts, kind="stable")
