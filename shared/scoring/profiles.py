"""User profiles from the vectors of their history. Pure numpy; every function returns unit
vectors of shape (m, d): one row for a single-interest profile, several for multi-interest.
``mean_profiles`` builds the plain VLM4Rec profile of many users at once, with the same
numbers as ``mean_profile`` of each."""

from __future__ import annotations

import numpy as np

from groundrec.shared.errors import UserError
from groundrec.shared.scoring import VECTOR_STRATEGIES
# A profile is built from a user's latest MAX_HISTORY known items (service and eval alike);
# older ones still count as seen.
MAX_HISTORY = 500
# ``mean_profiles`` gathers the histories' vectors (as float64) this many rows at a time: the
# learn stage's validation builds one profile per held-out item, 10,000 histories of up to
# MAX_HISTORY items, which whole would take gigabytes (200 MB here at 384 dimensions).
GATHER_ROWS = 1 << 16


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), as float32. The norm is summed as
    ``np.linalg.norm`` sums it, without its dispatch, and zero norms are replaced by adding
    ``norm == 0`` rather than through ``np.where`` (several times cheaper on one row): this
    runs several times per request."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    norm = np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))
    return (x / (norm + (norm == 0))).astype(np.float32, copy=False)


def weighted_profile(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.isfinite(w).all():
        raise UserError("history weights must be finite and >= 0")
    if w.sum() == 0:
        raise UserError("history weights are all zero")
    return unit((w[:, None] * np.asarray(vectors, dtype=np.float64)).sum(axis=0, keepdims=True) / w.sum())


def mean_profile(vectors: np.ndarray) -> np.ndarray:
    """VLM4Rec: the mean of the history's vectors (re-normalised: cosine ranking is unchanged)."""
    return weighted_profile(vectors, np.ones(len(vectors)))


def mean_profiles(vectors: np.ndarray, histories: list[np.ndarray],
                  weights: list[np.ndarray] | None = None) -> np.ndarray:
    """The mean profile of each history (rows of ``vectors``; every history non-empty), one
    row per history: float64 sums in history order divided by the count, as ``mean_profile``
    computes one; with ``weights`` (per history, one per item, each history's summing above 0)
    the weighted mean, as ``weighted_profile`` computes one. A few array operations per
    ``GATHER_ROWS`` items of the batch's histories, not a few per user."""
    sizes = np.array([len(h) for h in histories])
    if len(sizes) == 0:
        return np.zeros((0, vectors.shape[1]), np.float32)
    if sizes.min() == 0:
        raise UserError("cannot build a profile from an empty history")
    ends = np.cumsum(sizes)
    firsts = ends - sizes  # where each history starts among all of their items
    stacked_w = np.concatenate(weights).astype(np.float64) if weights is not None else None
    sums = np.empty((len(sizes), vectors.shape[1]), np.float64)
    start = 0
    while start < len(sizes):  # whole histories, about GATHER_ROWS of their items at a time
        stop = max(start + 1, int(np.searchsorted(ends, firsts[start] + GATHER_ROWS, side="right")))
        stacked = np.asarray(vectors[np.concatenate(histories[start:stop])], dtype=np.float64)
        if stacked_w is not None:
            stacked = stacked_w[firsts[start]:ends[stop - 1], None] * stacked
        sums[start:stop] = np.add.reduceat(stacked, firsts[start:stop] - firsts[start], axis=0)
        start = stop
    totals = (sizes.astype(np.float64) if weights is None
              else np.array([np.asarray(w, np.float64).sum() for w in weights]))  # each as ``w.sum()``
    return unit(sums / totals[:, None])


def recency_profiles(vectors: np.ndarray, histories: list[np.ndarray], times: list[np.ndarray] | None = None,
                     half_life_days: float = 0.0) -> np.ndarray:
    """Each history's profile from its latest items as a version serves it by default: with
    ``half_life_days`` the ``recency`` profile (``build_profile``'s numbers, weighed by
    ``times``), the version's when its job chose one (``Manifest.profile_half_life_days``);
    0: the mean (``times`` unused)."""
    recent = [latest(h) for h in histories]
    if not half_life_days:
        return mean_profiles(vectors, recent)
    return mean_profiles(vectors, recent,
                         [recency_weights(latest(np.asarray(t, np.float64)), half_life_days) for t in times])


def latest(history, max_history: int = MAX_HISTORY):
    """The part of a history a profile is built from: its latest ``max_history`` items."""
    return history[-max_history:]


def recency_weights(timestamps: np.ndarray, half_life_days: float, now: float | None = None) -> np.ndarray:
    """Exponential decay: an interaction ``half_life_days`` older than the newest weighs half."""
    if half_life_days <= 0:
        raise UserError("half_life_days must be > 0")
    t = np.asarray(timestamps, dtype=np.float64)
    ref = t.max() if now is None else now
    age_days = (ref - t) / 86_400.0
    return np.power(0.5, age_days / half_life_days)


def multi_interest(vectors: np.ndarray, n_interests: int = 3, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """Spherical k-means over the history: up to ``n_interests`` centroids, largest cluster first."""
    x = unit(np.asarray(vectors, dtype=np.float32))
    k = max(1, min(n_interests, len(np.unique(x, axis=0))))
    if k == 1:
        return mean_profile(x)
    rng = np.random.default_rng(seed)
    # k-means++ seeding on cosine distance
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = 1 - np.max(x @ np.array(centres).T, axis=1)
        d = np.clip(d, 0, None)
        centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.array(centres)
    for _ in range(iterations):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.array([x[assign == j].sum(axis=0) if np.any(assign == j) else c[j] for j in range(k)])
        new = unit(new)
        if np.allclose(new, c):
            break
        c = new
    sizes = np.bincount(np.argmax(x @ c.T, axis=1), minlength=k)
    order = np.argsort(-sizes, kind="stable")
    return c[order][sizes[order] > 0]


def build_profile(vectors: np.ndarray, strategy: str = "mean", timestamps: np.ndarray | None = None,
                  weights: np.ndarray | None = None, half_life_days: float = 30.0, n_interests: int = 3) -> np.ndarray:
    if len(vectors) == 0:
        raise UserError("cannot build a profile from an empty history")
    if strategy == "mean":
        return mean_profile(vectors)
    if strategy == "weighted":
        if weights is None:
            raise UserError("strategy 'weighted' needs a weight for every history item")
        return weighted_profile(vectors, weights)
    if strategy == "recency":
        if timestamps is None:
            raise UserError("strategy 'recency' needs a timestamp for every history item")
        w = recency_weights(timestamps, half_life_days)
        return weighted_profile(vectors, w if weights is None else w * np.asarray(weights, dtype=np.float64))
    if strategy == "multi_interest":
        return multi_interest(vectors, n_interests)
    raise UserError(f"unknown profile strategy {strategy!r}; choose one of {', '.join(VECTOR_STRATEGIES)}")
