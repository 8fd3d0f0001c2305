"""Ranking metrics over full-catalog top-K lists, per user (so they can be bootstrapped).

Definitions (K = cut-off, R = the user's relevant items, hits = relevant items in the top K):
Recall@K = hits / |R|; Precision@K = hits / K; HitRate@K = 1 if hits > 0;
NDCG@K = DCG / ideal DCG with binary gains, the ideal putting min(K, |R|) hits first;
MRR@K = 1 / rank of the first hit (0 if none in the top K).
The lists come from the scoring core's ``ranking.top_k_matrix`` (seen items excluded, ties to
the lower row), the service's own rule.
"""

from __future__ import annotations

import numpy as np

from groundrec.shared.errors import UserError

METRICS = ("recall", "ndcg", "hit_rate", "precision", "mrr")


def hits_matrix(ranked: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    return np.array([[i in rel for i in row] for row, rel in zip(ranked, relevant)], dtype=bool).reshape(ranked.shape)


def per_user_metrics(ranked: np.ndarray, relevant: list[set[int]], ks: list[int]) -> dict[str, np.ndarray]:
    """{"recall@10": array over users, ...} for every metric and cut-off in ``ks``."""
    hits = hits_matrix(ranked, relevant)
    n_rel = np.array([len(r) for r in relevant], dtype=np.float64)
    if np.any(n_rel == 0):
        raise UserError("every evaluated user needs at least one relevant item")
    discount = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(axis=1)
        out[f"recall@{k}"] = n_hits / n_rel
        out[f"precision@{k}"] = n_hits / k
        out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
        dcg = (h * discount[: h.shape[1]]).sum(axis=1)
        ideal_n = np.minimum(n_rel, k).astype(int)
        ideal = np.cumsum(discount)[np.maximum(ideal_n - 1, 0)]
        out[f"ndcg@{k}"] = dcg / ideal
        first = np.where(h.any(axis=1), h.argmax(axis=1) + 1, 0)
        out[f"mrr@{k}"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return out


def list_metrics(ranked: np.ndarray, popularity: np.ndarray, n_items: int, ks: list[int],
                 space: np.ndarray | None = None) -> dict[str, float]:
    """Beyond accuracy: catalog coverage (share of items in anybody's top K), popularity bias
    (mean training-interaction count of the recommended items, ARP) and, given ``space`` (unit
    item vectors), intra-list diversity (``diversity@K``: the mean cosine distance between
    the items of a list, averaged over lists)."""
    out = {}
    for k in ks:
        top = ranked[:, :k]
        flat = top[top >= 0]
        out[f"coverage@{k}"] = float(len(np.unique(flat)) / n_items)
        out[f"arp@{k}"] = float(popularity[flat].mean()) if len(flat) else 0.0
        if space is not None:
            out[f"diversity@{k}"] = intra_list_diversity(top, space)
    return out


def intra_list_diversity(top: np.ndarray, space: np.ndarray) -> float:
    """Mean over lists (of at least 2 items; -1 pads) of the mean pairwise cosine distance
    ``1 - u.v`` of their items' unit vectors: from the vector sum, ``sum_{i != j} u_i.u_j =
    |sum u|^2 - sum |u|^2``, no pair loop. An item without a vector (a zero row: no text to
    embed) is left out of its list's pairs: it was as far from everything as can be, so rows that
    list such items (popularity, the collaborative baselines) read as more diverse."""
    known = np.abs(space).sum(axis=1) > 0
    values = []
    for row in top:
        items = row[row >= 0]
        items = items[known[items]]
        n = len(items)
        if n < 2:
            continue
        v = space[items].astype(np.float64)
        total = v.sum(axis=0)
        pairs = float(total @ total - (v * v).sum())
        values.append(1.0 - pairs / (n * (n - 1)))
    return float(np.mean(values)) if values else 0.0
