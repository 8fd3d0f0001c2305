"""Collaborative item vectors with grounded content as side information: low-rank EASE.

EASE (Steck 2019) scores item j for a user as sum over the history of B[i, j], with
B = I - P / diag(P), P = (X'X + reg I)^-1 and X the users x items interaction matrix. Dense B
is items x items, out of reach at a million items. With a rank-r truncated SVD X ~ U S V'
the inverse has a closed form, P ~ (I - V F V') / reg with F = s^2 / (s^2 + reg), so

    B[i, j] = (V F V')[i, j] / d[j],   d[j] = 1 - sum_k V[j, k]^2 F[k]   (i != j)

which factors into a *query-side* vector q_i = V_i F (summed over a history) and an
*item-side* vector v_j = V_j / d_j (what the index holds): asymmetric, exactly EASE's
scores on the rank-r part of the Gram matrix, trained in a few sparse products (randomized
SVD, scikit-learn). Items with no interaction have V_j = 0; their two vectors come instead
from a ridge map of the content embeddings onto the warm items' vectors, so a new or
never-bought item still ranks by what it looks like to buyers of similar items.

Pure functions of arrays: the offline job learns on the whole window, ``groundrec eval`` on
each split's training part only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class CollabModel:
    query: np.ndarray  # (items x rank) float32: summed over a history, then unit-normalised
    item: np.ndarray  # (items x rank) float32: scored against the query
    warm: np.ndarray  # bool per item: had training interactions
    info: dict = field(default_factory=dict)


def interaction_matrix(histories: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Users x items, 1 where the user interacted with the item (repeats count once)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if histories else np.zeros(0, np.int64)
    x = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(histories), n_items))
    x.data[:] = 1.0
    return x


def factorize(x: sp.csr_matrix, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top ``rank`` right singular vectors (items x rank) and singular values of ``x``."""
    from sklearn.utils.extmath import randomized_svd

    rank = max(1, min(rank, min(x.shape) - 1))
    _, s, vt = randomized_svd(x, rank, n_oversamples=16, n_iter=4, random_state=seed)
    return np.ascontiguousarray(vt.T, dtype=np.float64), s.astype(np.float64)


def ease_vectors(v: np.ndarray, s: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """Query-side and item-side vectors of low-rank EASE for one regularisation."""
    f = s ** 2 / (s ** 2 + reg)
    query = v * f
    d = 1.0 - (v ** 2) @ f  # in (0, 1]; 1 for an item with no interaction
    item = v / np.maximum(d, 1e-6)[:, None]
    return query, item


def content_map(content: np.ndarray, target: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Ridge regression ``content -> target`` (d x r): what a cold item's vector should be."""
    gram = content.T @ content
    gram[np.diag_indices_from(gram)] += ridge
    return np.linalg.solve(gram, content.T @ target)


def fit(histories: list[np.ndarray], n_items: int, content: np.ndarray | None, rank: int = 128,
        reg: float = 100.0, seed: int = 0, factors: tuple[np.ndarray, np.ndarray] | None = None) -> CollabModel:
    """Learn the model from training histories (rows of the catalog). ``content``: the items'
    unit content vectors (rows of zeros for items without one), or None for no side
    information. ``factors``: a ``factorize`` result to reuse (tuning ``reg`` costs no SVD)."""
    started = time.perf_counter()
    x = interaction_matrix(histories, n_items)
    v, s = factors if factors is not None else factorize(x, rank, seed)
    query, item = ease_vectors(v, s, reg)
    counts = np.asarray(x.sum(axis=0)).ravel()
    warm = counts > 0
    info = {"model": "low-rank EASE", "rank": int(v.shape[1]), "reg": float(reg), "users": int(x.shape[0]),
            "interactions": int(x.nnz), "warm_items": int(warm.sum()), "cold_items": int((~warm).sum())}
    if content is not None and warm.any() and (~warm).any():
        has_content = np.linalg.norm(content, axis=1) > 0
        train = warm & has_content
        if train.sum() >= 2:
            maps = content_map(content[train].astype(np.float64), np.hstack([query[train], item[train]]))
            cold = ~warm & has_content
            mapped = content[cold].astype(np.float64) @ maps
            query[cold], item[cold] = mapped[:, :v.shape[1]], mapped[:, v.shape[1]:]
            info["cold_items_from_content"] = int(cold.sum())
    # One global scale: a warm item-side vector has norm 1 on average, so the weight that mixes
    # these scores with content cosines means the same on every catalog.
    scale = float(np.linalg.norm(item[warm], axis=1).mean()) if warm.any() else 1.0
    item /= scale if scale > 0 else 1.0
    info["fit_seconds"] = round(time.perf_counter() - started, 3)
    return CollabModel(query.astype(np.float32), item.astype(np.float32), warm, info)


def user_vectors(model: CollabModel, histories: list[np.ndarray]) -> np.ndarray:
    """Each history's query: the sum of its items' query-side vectors, unit-normalised (zero
    for an empty history)."""
    out = np.zeros((len(histories), model.query.shape[1]), np.float32)
    for n, h in enumerate(histories):
        if len(h):
            out[n] = model.query[h].sum(axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)
