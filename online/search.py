"""A version's index as the one searcher (``shared/scoring/searcher``) reads it: a flat
index's vectors held transposed for exact scoring, FAISS with an ID selector and an
over-fetched candidate list for an approximate one (with the head of the version's recent
prior, the items it lifts most, scored exactly beside it: the index finds items by their
vectors, not by the prior), a selective filter on an approximate index scored exactly over the
items it passes, and the new items' vectors for their places.
Everything that ranks (exclusion, prior, top-k, places, merging) is the searcher's; this module
only asks the index for scores or candidates. ``latest_items``: the items by when each first
appeared (``/latest``), live items by their first PUT."""

from __future__ import annotations

import faiss
import numpy as np

from groundrec.online.flat_scores import FlatScores
from groundrec.online.version import LoadedVersion
from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.collab import index_rows
from groundrec.shared.scoring.searcher import Ask, Searcher, best_of

BATCH_CHUNK = 256  # users per matrix product


class IndexSearch:
    def __init__(self, version: LoadedVersion, overfetch: int = 4, exact_subset_max: int = 20_000,
                 new_rows: np.ndarray | None = None, recent_prior: np.ndarray | None = None):
        self.v = version
        self.overfetch = overfetch  # candidates per result when a prior or max_per reorders them
        self.exact_subset_max = exact_subset_max  # filters passing fewer items are scored exactly
        self.hybrid = version.collab_query is not None
        index = version.index
        # A flat index is scored exactly, every item by one product (``FlatScores``).
        flat = (FlatScores(version, index)
                if isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT else None)
        self.ranker = Searcher(index.ntotal, new_rows, flat, recent_prior=recent_prior)
        self.new_rows = self.ranker.new_rows
        # The new items (``among``) as an approximate index holds them, built once: for a
        # projected hybrid that is a product per item, too dear to repeat on every request that
        # keeps a place (a flat index scores them with every other item, in ``rank``).
        self.new_vectors = self.indexed(self.new_rows) if len(self.new_rows) and self.flat is None else None
        self._heads: dict[str, tuple] = {}  # ``_head``'s: name -> (source, rows, their vectors, rows ranked)

    @property
    def flat(self) -> FlatScores | None:
        """A flat index's exact scores (the searcher's scorer; None: an approximate index)."""
        return self.ranker.scorer

    def search(self, profiles: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
               prior: np.ndarray | None, pick=None, slots: int = 0, lifts: tuple[bool, bool] = (False, False)
               ) -> list[tuple[int, float]]:
        """The list for one profile (one or several rows), with ``slots`` places for new items;
        ``lifts``: whether ``prior`` holds a popularity prior and a freshness lift (``with_head``)."""
        r = self.ranker
        if self.flat is not None:
            return r.rank(r.scores_of(profiles), k, seen, allowed, prior, pick, slots)
        if allowed is not None and allowed.sum() <= self.exact_subset_max:
            ranked = r.rank(self._subset(profiles, np.flatnonzero(allowed)), k, seen, None, prior, pick)
        else:
            ranked = self._widened(profiles, k, seen, allowed, prior, pick,
                                   self._width(k, len(seen), prior is not None or pick, pick), lifts)
        if not r.needs_new(ranked, slots):
            return ranked
        fresh = self.among(profiles, slots * (4 if pick else 1), seen, allowed, prior)  # a pick may refuse some
        return r.keep_places(ranked, fresh, k, slots, pick)

    def search_batch(self, profiles: np.ndarray, asks: list[Ask]) -> list[list[tuple[int, float]]]:
        """The lists of many single-row profiles (no filter; a pick only for max_per), each the
        list ``search`` gives: one matrix product per chunk of users on a flat index, one FAISS
        call otherwise, each row cut to the candidates ``search`` fetches for it (FAISS's best
        n are the first n of its best m > n, HNSW's too: tests/test_batch_max_per.py)."""
        r = self.ranker
        if self.flat is not None:
            return [ranked for start in range(0, len(asks), BATCH_CHUNK)
                    for ranked in r.rank_asks(self.flat(profiles[start:start + BATCH_CHUNK]),
                                              asks[start:start + BATCH_CHUNK])]
        priors = [r.prior(a.popularity_weight, a.fresh_weight) for a in asks]
        widths = [self._width(a.k, len(a.seen), prior is not None or a.pick, a.pick) for a, prior in zip(asks, priors)]
        scores, idx = self.candidates(np.asarray(profiles, dtype=np.float32), max(widths))
        head = self.prior_head(max(widths))
        lifts = [(a.popularity_weight > 0, a.fresh_weight > 0) for a in asks]
        new_scores = (np.asarray(profiles, np.float32) @ self.new_vectors.T  # the batch's one product, not one a user
                      if self.new_vectors is not None and any(fresh for _, fresh in lifts) else None)
        lists = [r.merge(*self.with_head(profiles[n:n + 1], s_row[None, :w], i_row[None, :w], w, None, head, lift,
                                         new_scores[n:n + 1] if new_scores is not None else None),
                         a.k, a.seen, prior, a.pick)
                 for n, (a, w, s_row, i_row, prior, lift) in enumerate(zip(asks, widths, scores, idx, priors, lifts))]
        for n, (a, w, prior) in enumerate(zip(asks, widths, priors)):
            if len(lists[n]) < a.k:  # short: widened as ``search`` widens it
                lists[n] = self._widened(profiles[n:n + 1], a.k, a.seen, None, prior, a.pick, w, lifts[n])
        return lists

    def _widened(self, profiles: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
                 prior: np.ndarray | None, pick, width: int, lifts=(False, False)) -> list[tuple[int, float]]:
        """The candidates' list, fetched once more four times as wide when it is short of ``k``
        (seen items, a filter's selector, max_per, an IVF's probed lists or a graph search's
        -1s left too few), then, still short, every allowed item scored exactly when they are
        at most four times ``exact_subset_max``; else the list stays short. Bounded on purpose: a pick
        that can never fill k (max_per over a column of few values) costs two fetches, never a
        scan of the catalog on the one thread that scores every batch."""
        r, n = self.ranker, self.v.index.ntotal
        for width in (min(n, width), min(n, 4 * width)):
            scores, idx = self.with_head(profiles, *self.candidates(profiles, width, allowed), width, allowed,
                                         lifts=lifts)
            ranked = r.merge(scores, idx, k, seen, prior, pick)
            if len(ranked) >= k:
                return ranked
        rows = np.flatnonzero(allowed) if allowed is not None else None
        if (len(rows) if rows is not None else n) <= 4 * self.exact_subset_max:
            return r.rank(self._subset(profiles, rows if rows is not None else np.arange(n)), k, seen, None, prior,
                          pick)
        return ranked

    def _width(self, k: int, n_seen: int, reordered, pick) -> int:
        """Candidates to fetch: k, over-fetched when a prior or a pick reorders them, plus seen."""
        wide = k * self.overfetch * (4 if pick else 1) if reordered else k
        return min(self.v.index.ntotal, wide + n_seen)

    def prior_head(self, width: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``width`` rows the version's recent prior lifts most (those with a prior above 0,
        ties to the lower row) and their vectors as the index holds them; None without a prior.
        Built once per prior array (live items replace it)."""
        prior = self.ranker.recent_prior
        if prior is None:
            return None
        return self._head("recent", prior, lambda: (order := np.argsort(-prior, kind="stable"))[prior[order] > 0], width)

    def popular_head(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``width`` most popular rows (``Popularity.order``) and their vectors as the index
        holds them, built once per popularity (a refresh replaces it)."""
        popularity = self.ranker.popularity
        return self._head("popular", popularity, lambda: popularity.order, width)

    def _head(self, name: str, source, ranked, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``width`` rows of ``ranked()`` (best first) and their vectors as the index
        holds them: built at the widest asked while ``source`` (what ``ranked`` reads, replaced
        whole when it changes) is the same, cut per call."""
        heads = self._heads
        cached = heads.get(name)
        if cached is None or cached[0] is not source or len(cached[1]) < min(width, cached[3]):
            order = ranked()
            rows = order[:max(width, len(cached[1]) if cached is not None and cached[0] is source else 0)]
            heads[name] = cached = (source, rows, self.indexed(rows).astype(np.float32), len(order))
        return cached[1][:width], cached[2][:width]

    def with_head(self, profiles: np.ndarray, scores: np.ndarray, idx: np.ndarray, width: int,
                  allowed: np.ndarray | None, head=None, lifts: tuple[bool, bool] = (False, False),
                  new_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """An approximate index's candidates (a row per profile row) with the rows a prior lifts
        most beside them, scored exactly against each profile row (a filter's ``allowed``
        applied): ``prior_head``'s (the version's recent prior), and with ``lifts`` the most
        popular (a request's popularity prior) and the best new items (a freshness lift, the
        same for every new item: the best by score), as eval ranks them; ``merge`` keeps each
        item's best score, so an item in several counts once. FAISS fetches by score alone.
        ``new_scores``: the profile rows' scores of the new items, when the caller has them (a batch's one product)."""
        profiles = np.asarray(profiles, np.float32)
        head = head if head is not None else self.prior_head(width)
        blocks = [(head[0][:width], profiles @ head[1][:width].T)] if head is not None and len(head[0]) else []
        if lifts[0]:
            rows, vectors = self.popular_head(width)
            blocks.append((rows, profiles @ vectors.T))
        if lifts[1] and self.new_vectors is not None:
            raw = profiles @ self.new_vectors.T if new_scores is None else new_scores  # profile rows x new items
            at = np.argsort(-raw.max(axis=0), kind="stable")[:width]  # ties to the lower row: new rows ascend
            blocks.append((self.new_rows[at], raw[:, at]))
        if not blocks:
            return scores, idx
        for rows, extra in blocks:
            if allowed is not None:
                extra[:, ~allowed[rows]] = -np.inf
        return (np.hstack([scores, *(extra for _, extra in blocks)]),
                np.hstack([idx, *(np.broadcast_to(rows, extra.shape) for rows, extra in blocks)]))

    def candidates(self, profiles: np.ndarray, fetch: int, allowed: np.ndarray | None = None):
        """FAISS's ``fetch`` best (scores, ids) per profile row, within ``allowed``."""
        params = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            params = _search_params(self.v.index, faiss.IDSelectorBitmap(self.v.index.ntotal, faiss.swig_ptr(bits)))
            params._bits = bits  # keep the buffer alive for the search
        return self.v.index.search(np.ascontiguousarray(profiles, dtype=np.float32), fetch, params=params)

    def among(self, profiles: np.ndarray, k: int, seen: set[int], allowed: np.ndarray | None,
              prior: np.ndarray | None) -> list[tuple[int, float]]:
        """The best ``k`` of the new items (those this search was built with), scored exactly."""
        rows = self.new_rows
        vectors = self.new_vectors if self.new_vectors is not None else self.indexed(rows)
        scores = best_of(vectors, profiles)  # one per new item
        if prior is not None:
            scores = scores + prior[rows]  # as ``final`` adds it
        if allowed is not None:
            scores[~allowed[rows]] = -np.inf
        if seen:
            scores[np.isin(rows, np.fromiter(seen, np.int64, len(seen)))] = -np.inf
        # rows ascend, so ties broken by position are ties broken by row, as everywhere
        return [(int(rows[at]), score) for at, score in self.ranker.take(scores, k)]

    def _subset(self, profiles: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """A selective filter on an approximate index: the few allowed items scored exactly
        (-inf elsewhere). Graph and IVF searches lose recall when most items are filtered out;
        this does not."""
        scores = np.full(self.v.index.ntotal, -np.inf, dtype=np.float32)
        scores[rows] = best_of(self.indexed(rows), profiles)
        return scores

    def indexed(self, rows: np.ndarray) -> np.ndarray:
        """Some items' vectors as the index holds them: the content vector, and for a hybrid
        version the weighted item-side collaborative vector beside it, projected when the
        version is (built for these rows only, not kept for the whole catalog)."""
        if not self.hybrid:
            return np.asarray(self.v.vectors[rows])
        return index_rows(self.v.vectors[rows], self.v.collab_weight * self.v.collab_item[rows], self.v.project_item)


def _search_params(index: faiss.Index, selector) -> faiss.SearchParameters:
    """Search parameters carrying a selector and the index's own tuned knob (a selector
    given with plain ``SearchParameters`` would reset nprobe/efSearch to their defaults)."""
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


def latest_items(r, k: int, seen: set[int], allowed: np.ndarray | None, pick) -> list[tuple[int, float]]:
    """A retriever's items by when each first appeared, newest first, scored by that time: a
    live item's first PUT, else the version's ``first_seen`` column (its first interaction in
    the job's window); items with neither last, in row order (cached until the catalog changes)."""
    n, live = r.v.index.ntotal, r.live
    key = (n, live.first_seen_changes if live is not None else 0)
    if getattr(r, "_latest", (None,))[0] != key:
        when = np.full(n, -np.inf)
        if "first_seen" in r.v.items.column_names:
            first = r.v.items.column("first_seen").to_numpy(zero_copy_only=False).astype(np.float64)
            when[:len(first)] = np.nan_to_num(first, nan=-np.inf)
        for item_id, t in (live.first_seen.items() if live is not None else ()):
            when[r.v.row_of[item_id]] = t
        r._latest = (key, np.argsort(-when, kind="stable"), np.where(np.isfinite(when), when, 0.0))
    _, order, when = r._latest
    usable = ((int(i), float(when[i])) for i in order if i not in seen and (allowed is None or allowed[i]))
    return ranking.picked_from(usable, k, pick)
