"""Retrieval over a loaded version: a profile from the history's vectors, then top-K."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groundrec.online.version import LoadedVersion


@dataclass
class Recommendation:
    item_id: str
    score: float


@dataclass
class Result:
    items: list[Recommendation]
    unknown_ids: list[str]


def mean_profile(vectors: np.ndarray) -> np.ndarray:
    """The VLM4Rec profile: the mean of the history's unit vectors, re-normalised."""
    p = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = np.linalg.norm(p)
    return p / norm if norm > 0 else p


def recommend(version: LoadedVersion, history: list[str], k: int = 10) -> Result:
    rows = [version.row_of[i] for i in history if i in version.row_of]
    unknown = [i for i in history if i not in version.row_of]
    if not rows:
        raise ValueError(f"no known item in the history ({len(unknown)} unknown id(s)): cannot build a profile")
    profile = mean_profile(version.vectors[rows])[None, :]
    seen = set(rows)
    fetch = min(version.index.ntotal, k + len(seen))
    scores, idx = version.index.search(profile, fetch)
    ids = version.item_ids
    out = [Recommendation(ids[j], float(s)) for s, j in zip(scores[0], idx[0]) if j >= 0 and j not in seen]
    return Result(out[:k], unknown)
