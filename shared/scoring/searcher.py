"""One searcher owns ranking: every way a list is made from scores is a method here, on
arrays only (no index library), so the service and ``groundrec eval`` rank with the same code.

A list is made in one order: the priors added (the request's popularity prior, a version's
own recent-popularity prior, the freshness lift), filtered-out and seen items at -inf
(``final``), the best k taken with ties to the lower row (``take``, through ``pick`` when
max_per or diversity asks for more than the best k), then the places kept for new items
(``keep_places``). The ways in:

- ``rank``: one query's full score vector (an exact search);
- ``rank_rows``: a (users x items) score matrix (a batch, and eval's lists), max_per included;
- ``merge``: candidates from an approximate index (one row per profile: several interests are
  merged, best score per item);
- ``popular``: the fallback when a history gives nothing to rank by.

``best_of`` is the score of an item for a profile of several rows (multi-interest): its best
row. The index's own search (FAISS) stays with the online tier, which hands its arrays here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import pyarrow as pa

from groundrec.shared.artifact.layout import RECENT_INTERACTIONS, Manifest
from groundrec.shared.scoring import popularity as pop
from groundrec.shared.scoring import ranking

Ranked = list[tuple[int, float]]
HEAD = 4  # a pick takes its k from the best HEAD x k, widened HEAD-fold while that is not enough


def best_of(vectors: np.ndarray, profiles: np.ndarray) -> np.ndarray:
    """Each item's score for a profile of one or several rows: its best cosine over the rows
    (items x dim against rows x dim, one score per item)."""
    return (vectors @ np.asarray(profiles, dtype=np.float32).T).max(axis=1)


class Ask(NamedTuple):
    """One list asked of a batch: its length, the rows it must not hold, the weights of its
    priors (popularity, freshness of the new items), its places kept for new items and how its
    k are taken from the ranking's head (``pick``: ``ranking.select`` with max_per; None: the
    best k)."""

    k: int
    seen: set[int]
    popularity_weight: float = 0.0
    fresh_weight: float = 0.0
    slots: int = 0
    pick: Callable | None = None


@dataclass(frozen=True)
class Popularity:
    """A catalog's popularity as ranking reads it, replaced whole (a batch in flight reads the
    old or the new, never a mix): ``log_pop`` for the prior, ``order`` for the fallback."""

    log_pop: np.ndarray
    order: np.ndarray  # item rows, most popular first, ties to the lower row

    @classmethod
    def of(cls, counts: np.ndarray) -> "Popularity":
        return cls(pop.log_prior(counts), pop.most_popular_first(counts))


class Searcher:
    """Ranking over one catalog of ``n_items`` rows. ``new_rows``: the items a hybrid keeps
    places for (no interaction in its window); ``scorer``: every item's score for each row of
    a profile (rows x items), when profiles are scored exactly against all items (the online
    tier's ``FlatScores``)."""

    def __init__(self, n_items: int, new_rows: np.ndarray | None = None, scorer: Callable | None = None,
                 counts: np.ndarray | None = None, recent_prior: np.ndarray | None = None):
        self.n_items = n_items
        # The version's own recent-popularity prior, per item (``recent_prior``), added to every
        # list it ranks: None where its job chose none.
        self.recent_prior = recent_prior
        self.new_rows = new_rows if new_rows is not None else np.zeros(0, np.int64)
        self.is_new = frozenset(self.new_rows.tolist())
        self.scorer = scorer
        self.popularity = Popularity.of(counts if counts is not None else np.zeros(n_items))

    def set_counts(self, counts: np.ndarray) -> None:
        self.popularity = Popularity.of(counts)

    @staticmethod
    def recent_prior_of(weight: float, counts: np.ndarray | None) -> np.ndarray | None:
        """A version's recent-popularity prior per item, ``weight x ln(1 + count)`` of its
        recent counts (``RECENT_INTERACTIONS``), float32; None without one."""
        return None if not weight or counts is None else (weight * pop.log_prior(counts)).astype(np.float32)

    @staticmethod
    def version_recent_prior(manifest: Manifest, items: pa.Table) -> np.ndarray | None:
        """A published version's prior per item row: its manifest's ``recent_weight`` over its
        items table's ``RECENT_INTERACTIONS`` (None without them). The service's versions
        (``LoadedVersion.recent_prior``) and the gate's read it here, the one reader."""
        if RECENT_INTERACTIONS not in items.column_names:
            return None
        counts = items.column(RECENT_INTERACTIONS).to_numpy(zero_copy_only=False).astype(np.float64)
        return Searcher.recent_prior_of(manifest.recent_weight, counts)

    # --- scores ----------------------------------------------------------------------
    def prior(self, popularity_weight: float, fresh_weight: float = 0.0) -> np.ndarray | None:
        """What is added to every item's score for one query: ``w x ln(1 + count)`` and the
        freshness lift of the new items (None: nothing)."""
        if not popularity_weight and not fresh_weight:
            return self.recent_prior  # shared, read only (a batch's asks hold one array, not one each)
        log_pop = self.popularity.log_pop
        base = np.zeros_like(log_pop) if self.recent_prior is None else self.recent_prior.astype(np.float32)
        return ranking.lift(ranking.add_prior(base, popularity_weight, log_pop), fresh_weight, self.new_rows)

    def scores_of(self, profiles: np.ndarray) -> np.ndarray:
        """Every item's score for a profile (best over its rows), from ``scorer``."""
        return self.scorer(np.asarray(profiles, dtype=np.float32)).max(axis=0)

    @staticmethod
    def final(scores: np.ndarray, seen, allowed: np.ndarray | None = None,
              prior: np.ndarray | None = None) -> np.ndarray:
        """A full score vector as ranked: the prior added, filtered-out and seen items at -inf."""
        if prior is not None:
            scores = scores + prior
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        return ranking.exclude(scores, seen)

    @staticmethod
    def take(scores: np.ndarray, k: int, pick=None) -> Ranked:
        """The best ``k`` of a final score vector; with ``pick`` (``ranking.select``: max_per,
        diversity) the k it takes from a widening head of the ranking (``HEAD`` x k first, then
        ``HEAD`` times as wide while short, up to the whole ranking: a list that can be filled
        is). A pick that can never fill k reads the whole ranking once, in time and memory
        linear in it (``ranking.select``)."""
        if not pick:
            return ranking.top_k(scores, k)
        wide = HEAD * k
        while True:
            head = ranking.top_k(scores, wide)
            picked = pick(head, k)
            if len(picked) == k or len(head) < wide:
                return picked
            wide *= HEAD

    # --- places kept for new items ------------------------------------------------------
    def needs_new(self, ranked: Ranked, slots: int) -> int:
        """How many new items this list lacks for ``slots`` places (0: leave it as it is)."""
        return ranking.missing_new(ranked, slots, self.is_new) if slots else 0

    def keep_places(self, ranked: Ranked, fresh: Ranked, k: int, slots: int, pick=None) -> Ranked:
        """``ranked`` holding ``slots`` of the new items when there are that many, the best of
        ``fresh`` (the new items ranked, best first) in the places of its lowest others. With a
        ``pick`` (max_per), a new item only where the list's limits let it in (it is ``pick``'s
        own test: the item kept when picked from the list beside it)."""
        if pick is not None and fresh:
            head, fitting = list(ranked[:k]), []
            for f in fresh:  # one at a time: two new variants of one product do not both fit
                if f[0] in {row for row, _ in pick(head + fitting + [f], len(head) + len(fitting) + 1)}:
                    fitting.append(f)
            fresh = fitting
        return ranking.reserve(ranked, fresh, k, slots, self.is_new)

    def holding_new_of(self, ranked: Ranked, other: list[int], k: int, score_of: Callable, pick=None) -> Ranked:
        """``ranked`` (the sequence encoder's list) holding the new items of ``other`` (item
        rows of the hybrid's list for the same request, its freshness lift and kept places
        applied): each of them not already in it replaces its lowest other item, at its score
        in ``ranked``'s query (``score_of``: item rows -> scores, as ``ranked`` holds scores:
        its prior too). The hybrid decides which new items a list shows and how many, the
        encoder orders everything else: it cannot rank items nobody has interacted with. With
        a ``pick`` (max_per, diversity) a new item only where the list's limits let it in
        (``keep_places``)."""
        present = {row for row, _ in ranked[:k]}
        extra = [int(row) for row in other if row in self.is_new and row not in present]
        if not extra:
            return list(ranked[:k])
        have = sum(row in self.is_new for row in present)
        fresh = list(zip(extra, (float(s) for s in score_of(extra))))
        return self.keep_places(ranked, fresh, k, min(k, have + len(extra)), pick)

    def rank_holding_new_of(self, scores: np.ndarray, others: np.ndarray, k: int, seen: list | None = None) -> list[Ranked]:
        """Each row's list of k from a (users x items) matrix (``rank_rows``, no places of its
        own), then ``holding_new_of`` that row of ``others`` (item rows, -1 padded): the
        sequence encoder's lists on a hybrid version, in eval and the job's validation."""
        lists = self.rank_rows(scores, [k] * len(scores), seen)
        return [self.holding_new_of(ranked, [r for r in row.tolist() if r >= 0], k, lambda rows, n=n: scores[n, rows])
                for n, (ranked, row) in enumerate(zip(lists, others))]

    def best_new(self, scores: np.ndarray, users: list[int], ks: list[int]) -> list[Ranked]:
        """For these rows of a final (users x items) score matrix, the best ``ks`` new items."""
        return ranking.best_new(scores, users, self.new_rows, ks)

    # --- the ways a list is made -------------------------------------------------------------
    def rank(self, scores: np.ndarray, k: int, seen, allowed: np.ndarray | None = None,
             prior: np.ndarray | None = None, pick=None, slots: int = 0) -> Ranked:
        """One query's list from its full score vector; the new items for its places come from
        the same vector, ranked only when the list holds too few."""
        scores = self.final(scores, seen, allowed, prior)
        ranked = self.take(scores, k, pick)
        if not self.needs_new(ranked, slots):
            return ranked
        fresh = self.best_new(scores[None, :], [0], [slots * (HEAD if pick else 1)])[0]  # a pick may refuse some
        return self.keep_places(ranked, fresh, k, slots, pick)

    def rank_asks(self, scores: np.ndarray, asks: list[Ask]) -> list[Ranked]:
        """``rank_rows`` for a batch of asks: each row's priors added (in place), then ranked."""
        ranking.add_prior(scores, [a.popularity_weight for a in asks], self.popularity.log_pop)
        if self.recent_prior is not None:
            scores += self.recent_prior
        ranking.lift(scores, [a.fresh_weight for a in asks], self.new_rows)
        return self.rank_rows(scores, [a.k for a in asks], [a.seen for a in asks], [a.slots for a in asks],
                              [a.pick for a in asks])

    def rank_rows(self, scores: np.ndarray, ks: list[int], seen: list | None = None,
                  slots: list[int] | None = None, picks: list | None = None) -> list[Ranked]:
        """Each row's list from a (users x items) matrix (the prior already in it; seen items
        excluded here, in place), with its places for new items: the whole batch in a fixed
        handful of array operations (``ranking.top_k_rows``). A row with a pick (max_per) gets
        its head of ``HEAD`` x k in the same operations and takes its k from it as ``take``
        does; only a row whose head was not enough is widened alone, by ``take``."""
        if seen is not None:
            ranking.exclude(scores, seen)
        if picks is None or not any(picks):
            lists = ranking.top_k_rows(scores, ks)
        else:
            lists = ranking.top_k_rows(scores, [HEAD * k if pick else k for k, pick in zip(ks, picks)])
            for r, pick in enumerate(picks):
                if pick:
                    head, k = lists[r], ks[r]
                    lists[r] = pick(head, k)
                    if len(lists[r]) < k and len(head) == HEAD * k:  # the head was not enough: widen
                        lists[r] = self.take(scores[r], k, pick)
        if slots is None or not self.is_new:
            return lists
        short = [r for r, ranked in enumerate(lists) if self.needs_new(ranked, slots[r])]
        wanted = [slots[r] * (HEAD if picks and picks[r] else 1) for r in short]  # a pick may refuse some
        for r, fresh in zip(short, self.best_new(scores, short, wanted)):
            lists[r] = self.keep_places(lists[r], fresh, ks[r], slots[r], picks[r] if picks else None)
        return lists

    def top_matrix(self, scores: np.ndarray, k: int, seen: list | None = None, slots: int = 0,
                   no_profile: list[int] = (), others: np.ndarray | None = None) -> np.ndarray:
        """``rank_rows`` with one k for every row (``rank_holding_new_of`` with ``others``, the
        hybrid's lists), as an int array (users x min(k, items)) of item rows padded with -1
        where a row has fewer finite scores. The rows ``no_profile`` (users with nothing to rank
        by) get the ``popular`` fallback, as the service gives it."""
        k = min(k, scores.shape[1])
        if others is not None:
            lists = self.rank_holding_new_of(scores, others, k, seen)
        else:
            lists = self.rank_rows(scores, [k] * len(scores), seen, [slots] * len(scores) if slots else None)
        for r in no_profile:
            lists[r] = self.popular(k, set(np.asarray(seen[r]).tolist()) if seen is not None else set())
        out = np.full((len(scores), k), -1, dtype=np.int64)
        for r, ranked in enumerate(lists):
            out[r, :len(ranked)] = [row for row, _ in ranked]
        return out

    @staticmethod
    def merge(scores: np.ndarray, ids: np.ndarray, k: int, seen, prior: np.ndarray | None = None,
              pick=None) -> Ranked:
        """A list from an approximate index's candidates (one row of ``scores``/``ids`` per
        profile row, -1 for none): seen items dropped, the prior added, several rows merged
        with the best score per item, ties to the lower row."""
        best: dict[int, float] = {}
        for s_row, i_row in zip(scores, ids):
            for s, i in zip(s_row, i_row):
                if i >= 0 and i not in seen:
                    s = float(s) + (float(prior[i]) if prior is not None else 0.0)
                    if s > best.get(i, -np.inf):
                        best[int(i)] = s
        ranked = sorted(best.items(), key=lambda p: (-p[1], p[0]))
        return pick(ranked, k) if pick else ranked[:k]

    def popular(self, k: int, seen, allowed: np.ndarray | None = None, pick=None) -> Ranked:
        """The fallback when there is nothing to rank by: the most popular items not seen and
        allowed, scored by their log count."""
        p = self.popularity
        usable = ((int(i), float(p.log_pop[i])) for i in p.order if i not in seen and (allowed is None or allowed[i]))
        return ranking.picked_from(usable, k, pick)
