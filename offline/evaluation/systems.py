"""The recommenders compared: baselines and content-based ranking on item vectors.

Each system maps a batch of users (histories) to a (users x items) score matrix; the
evaluation excludes seen items and takes the top K. Content and hybrid systems score with the
scoring core the service calls (``groundrec.shared.scoring``), so what is evaluated is what
is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from groundrec.shared.scoring import popularity as pop
from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.collab import collab_queries
from groundrec.shared.scoring.profiles import MAX_HISTORY, build_profile, latest, unit
from groundrec.shared.scoring.searcher import Searcher, best_of

if TYPE_CHECKING:
    from groundrec.offline.collab import CollabModel, Projection

CHUNK = 256  # users scored per matrix product


class System:
    """``name`` and ``representation`` label the report row (class or instance attributes)."""

    # Its list of k is the first k of any longer list (not so with places kept for new items).
    prefix_consistent = True

    def scores(self, histories: list[np.ndarray], history_ts: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def top(self, scores: np.ndarray, k: int, seen: list) -> np.ndarray:
        """The top-k rows of each user's scores (seen excluded, in place), as the service ranks."""
        return Searcher(scores.shape[1]).top_matrix(scores, k, seen)


class RandomSystem(System):
    name, representation = "Random", "-"

    def __init__(self, n_items: int, seed: int = 0):
        self.n_items, self.rng = n_items, np.random.default_rng(seed)  # one stream: every user draws anew

    def scores(self, histories, history_ts):
        return self.rng.random((len(histories), self.n_items))


class MostPopular(System):
    name, representation = "Most popular", "-"

    def __init__(self, popularity: np.ndarray):
        self.popularity = popularity.astype(np.float64)

    def scores(self, histories, history_ts):
        return np.tile(self.popularity, (len(histories), 1))


class ItemCooccurrence(System):
    """Item-item collaborative filtering: an item scores the sum of its cosine co-occurrence
    with the user's history items (users who bought both / sqrt(buyers of each))."""

    name, representation = "Item-item co-occurrence", "interactions"

    def __init__(self, train_histories: list[np.ndarray], n_items: int):
        rows = np.repeat(np.arange(len(train_histories)), [len(h) for h in train_histories])
        cols = np.concatenate(train_histories) if train_histories else np.zeros(0, int)
        x = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(train_histories), n_items))
        x.data[:] = 1.0  # bought at least once
        co = (x.T @ x).tocsr()
        norms = np.sqrt(np.asarray(co.diagonal(), dtype=np.float64))
        norms[norms == 0] = 1.0
        co = sp.diags(1 / norms) @ co @ sp.diags(1 / norms)
        co.setdiag(0)
        self.co = co.tocsr()
        self.n_items = n_items

    def scores(self, histories, history_ts):
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        h = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(histories))), shape=(len(histories), self.n_items))
        return np.asarray((h @ self.co).todense())


@dataclass
class ContentSystem(System):
    """Profile from the history's item vectors, cosine to every item (+ optional popularity
    prior: score = cos + w * log(1 + popularity)). Items without a vector are never ranked;
    a history with no vectorised item falls back to popularity, as the service does."""

    name: str
    representation: str
    vectors: np.ndarray  # unit rows; all-zero rows = item has no vector
    popularity: np.ndarray
    strategy: str = "mean"
    popularity_weight: float = 0.0
    half_life_days: float = 30.0
    n_interests: int = 3
    params: dict = field(default_factory=dict)
    max_history: int = MAX_HISTORY  # the service's default: the latest this many known items
    scored: np.ndarray | None = None  # what profiles are scored against, if not ``vectors`` (a projected hybrid)
    recent_prior: np.ndarray | None = None  # a version's recent-popularity prior per item (``Searcher.recent_prior_of``)

    def __post_init__(self):
        self.has_vector = np.linalg.norm(self.vectors, axis=1) > 0
        self.log_pop = pop.log_prior(self.popularity)
        if self.scored is None:
            self.scored = self.vectors

    def _profile(self, hist: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
        keep = self.has_vector[hist]
        if not keep.any():
            return None
        hist, ts = latest(hist[keep], self.max_history), latest(ts[keep], self.max_history)
        return build_profile(self.vectors[hist], self.strategy, ts, np.ones(len(hist)),
                             self.half_life_days, self.n_interests)

    def scores(self, histories, history_ts):
        out = np.empty((len(histories), len(self.vectors)), dtype=np.float32)
        profiles = [self._profile(h, t) for h, t in zip(histories, history_ts)]
        single = [i for i, p in enumerate(profiles) if p is not None and len(p) == 1]
        for start in range(0, len(single), CHUNK):  # one matrix product per chunk of users
            idx = single[start:start + CHUNK]
            out[idx] = np.stack([profiles[i][0] for i in idx]) @ self.scored.T
        for i, p in enumerate(profiles):
            if p is None:
                out[i] = self.log_pop * 1e3  # by popularity (validation); ``top`` gives the service's fallback
            elif len(p) > 1:  # several interests: best cosine over the centroids
                out[i] = best_of(self.scored, p)
        ranking.add_prior(out, [self.popularity_weight] * len(out), self.log_pop)
        if self.recent_prior is not None:
            out += self.recent_prior
        out[:, ~self.has_vector] = -np.inf
        return out

    def no_profile(self, histories: list[np.ndarray]) -> list[int]:
        """The users whose history has no item with a vector: ``scores`` ranks them by
        popularity, and their lists are the service's popular fallback (``top``)."""
        return [i for i, h in enumerate(histories) if not self.has_vector[h].any()]

    def top(self, scores, k, seen):
        return Searcher(len(self.vectors), counts=self.popularity).top_matrix(scores, k, seen,
                                                                              no_profile=self.no_profile(seen))


def version_content(name: str, representation: str, content: np.ndarray, popularity: np.ndarray,
                    recent_prior: np.ndarray | None, profile_half_life_days: float = 0.0) -> ContentSystem:
    """A version's content part as it answers a request that sets nothing: its default profile
    (the mean, or the ``recency`` its job chose for a content-only version) and its own
    recent-popularity prior. eval's published row and the gate's two versions are made here."""
    recency = {"strategy": "recency", "half_life_days": profile_half_life_days} if profile_half_life_days else {}
    return ContentSystem(name, representation, content, popularity, recent_prior=recent_prior, **recency)


def fused_vectors(text: np.ndarray, visual: np.ndarray) -> np.ndarray:
    """Concatenation of the two unit vectors, re-normalised: cosine = mean of the two cosines
    for item-item similarity. Items lacking either vector get none."""
    both = (np.linalg.norm(text, axis=1) > 0) & (np.linalg.norm(visual, axis=1) > 0)
    out = unit(np.concatenate([text, visual], axis=1))
    out[~both] = 0
    return out


@dataclass
class ScoreFusion(System):
    """Weighted mean of two content systems' scores: w * cos_text + (1 - w) * cos_visual. The
    two encoders live in different spaces, so vectors cannot be averaged; scores can."""

    name: str
    representation: str
    text: ContentSystem
    visual: ContentSystem
    text_weight: float = 0.5
    params: dict = field(default_factory=dict)

    def scores(self, histories, history_ts):
        """A user with a profile on one side only is ranked by that side (the other's scores
        are its popularity stand-in, 1e3 x log popularity: mixed in, they made the list a
        popularity ranking)."""
        a, b = self.text.scores(histories, history_ts), self.visual.scores(histories, history_ts)
        out = self.text_weight * a + (1 - self.text_weight) * b
        no_text, no_visual = set(self.text.no_profile(histories)), set(self.visual.no_profile(histories))
        for i in no_visual - no_text:
            out[i] = a[i]
        for i in no_text - no_visual:
            out[i] = b[i]
        return out

    def top(self, scores, k, seen):
        """The popular fallback for a user with no profile on either side."""
        neither = sorted(set(self.text.no_profile(seen)) & set(self.visual.no_profile(seen)))
        return Searcher(len(self.text.vectors), counts=self.text.popularity).top_matrix(scores, k, seen,
                                                                                       no_profile=neither)


@dataclass
class CollabSystem(System):
    """Low-rank EASE (``offline.collab``) alone, or the hybrid: content cosine of the
    representation's mean profile + ``weight`` x the collaborative score, exactly what the
    published hybrid version serves."""

    name: str
    representation: str
    model: "CollabModel"
    content: ContentSystem | None = None
    weight: float = 1.0
    params: dict = field(default_factory=dict)
    half_life: float = 0.0  # of the collaborative query, in items (0: none), as the version stores it
    fresh_weight: float = 0.0  # hybrid: added to items with no training interaction (the content's popularity 0)
    fresh_slots: int = 0  # hybrid: of each list, this many kept for those new items (ranking.reserve)

    def scores(self, histories, history_ts):
        recent = [latest(h) for h in histories]
        cf = np.empty((len(histories), len(self.model.item)), dtype=np.float32)
        for start in range(0, len(histories), CHUNK):
            cf[start:start + CHUNK] = self.model.item_side.scores(
                collab_queries(self.model.query, recent[start:start + CHUNK], self.half_life))
        if self.content is None:
            return cf
        out = self.content.scores(histories, history_ts) + self.weight * cf
        if self.fresh_weight:
            ranking.lift(out, [self.fresh_weight] * len(out), pop.new_items(self.content.popularity))
        return out

    @property
    def prefix_consistent(self) -> bool:
        return not (self.fresh_slots and self.content is not None)

    def top(self, scores, k, seen):
        if self.content is None:
            return super().top(scores, k, seen)
        popularity = self.content.popularity
        return Searcher(len(popularity), pop.new_items(popularity) if self.fresh_slots else None,
                        counts=popularity).top_matrix(scores, k, seen, self.fresh_slots, self.content.no_profile(seen))


def hybrid_system(name: str, representation: str, content: ContentSystem, model: "CollabModel", weight: float,
                  projection: "Projection | None" = None, params: dict | None = None,
                  half_life: float = 0.0, fresh_weight: float = 0.0, fresh_slots: int = 0) -> CollabSystem:
    """The hybrid as a version serves it. Through a projection, content profiles and
    collaborative queries are scored against the items' effective vectors (what a profile's
    projected product with the projected index amounts to)."""
    from dataclasses import replace

    from groundrec.offline.collab import CollabModel

    if projection is not None:
        d = content.vectors.shape[1]
        scored = projection.effective(content.vectors, weight * model.item)
        content = replace(content, scored=scored[:, :d])
        model = CollabModel(model.query, scored[:, d:] / weight, model.fitted, model.info)
    return CollabSystem(name, representation, model, content, weight, params=params or {}, half_life=half_life,
                        fresh_weight=fresh_weight, fresh_slots=fresh_slots)


class ImplicitALS(System):
    """Matrix factorisation for implicit feedback (Hu, Koren & Volinsky 2008), as the
    ``implicit`` library implements it: a well-kept collaborative baseline. Users are folded
    in from their histories (``recalculate_user``), so any history can be scored."""

    name, representation = "ALS (implicit)", "interactions"

    def __init__(self, train_histories: list[np.ndarray], n_items: int, factors: int = 128,
                 regularization: float = 0.01, alpha: float = 1.0, seed: int = 0):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        from groundrec.offline.collab import interaction_matrix

        self.n_items, self.params = n_items, {"factors": factors, "regularization": regularization, "alpha": alpha}
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads inside them oversubscribe
            self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                                 iterations=15, random_state=seed, num_threads=0)
            self.model.fit(interaction_matrix(train_histories, n_items), show_progress=False)

    def scores(self, histories, history_ts):
        from groundrec.offline.collab import interaction_matrix

        users = self.model.recalculate_user(np.arange(len(histories)), interaction_matrix(histories, self.n_items))
        return users @ self.model.item_factors.T
