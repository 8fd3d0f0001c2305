"""A hybrid projected to the content's width (the learn stage's, the gate's and eval's one
fit): the projection (``collab.fit_projection``) fitted on full-width hybrid profiles built as
the service builds them, from at most ``PROJECTION_USERS`` users' histories."""

from __future__ import annotations

import numpy as np

from groundrec.offline import collab
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries
from groundrec.shared.scoring.profiles import latest, mean_profiles

PROJECTION_USERS = 20_000  # most training users whose profiles fit the projection


def hybrid_profiles(content: np.ndarray, model: collab.CollabModel, histories: list[np.ndarray],
                    half_life: float = 0.0) -> np.ndarray:
    """Full-width hybrid profiles, as the service builds them: the mean content profile beside
    the collaborative query (both over the latest items)."""
    recent = [latest(h) for h in histories]
    return hybrid_queries(mean_profiles(content, recent), collab_queries(model.query, recent, half_life), None)


def projection_sample(histories: list[np.ndarray], seed: int) -> list[np.ndarray]:
    usable = [h for h in histories if len(h)]
    if len(usable) <= PROJECTION_USERS:
        return usable
    return [usable[i] for i in np.sort(np.random.default_rng(seed).choice(len(usable), PROJECTION_USERS, replace=False))]


def project(content: np.ndarray, model: collab.CollabModel, weight: float, histories: list[np.ndarray],
            seed: int = 0, half_life: float = 0.0) -> collab.Projection:
    """The projection of a hybrid to the content's width, fitted on these users' profiles."""
    return collab.fit_projection([content, weight * model.item],
                                 hybrid_profiles(content, model, projection_sample(histories, seed), half_life),
                                 content.shape[1])
