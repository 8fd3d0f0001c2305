"""offline/projection.py: the hybrid projected to the content's width, fitted on hybrid
profiles built as the service builds them, from a bounded, seeded sample of users."""

import numpy as np

from groundrec.offline import projection
from groundrec.offline.collab import CollabModel
from groundrec.shared.scoring.collab import index_rows


def _model(rng, n=14, d=6, rank=4):
    content = rng.normal(size=(n, d)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    # item-side vectors a linear map of content: [content, w x item] has rank d, so a
    # projection to d dimensions can keep every score
    item = (content @ rng.normal(size=(d, rank))).astype(np.float32)
    query = rng.normal(size=(n, rank)).astype(np.float32)
    return content, CollabModel(query, item, np.ones(n, bool))


def test_a_projection_to_the_content_width_keeps_the_hybrid_scores_when_the_items_fit_in_it():
    rng = np.random.default_rng(0)
    content, model = _model(rng)
    histories = [rng.choice(14, size=int(rng.integers(1, 6)), replace=False) for _ in range(40)]
    proj = projection.project(content, model, 3.0, histories, half_life=2.0)
    assert proj.info["dim"] == 6 and proj.info["from"] == 10 and proj.info["profiles"] == 40
    profiles = rng.normal(size=(30, 10))  # any profile: the items' space fits in the projection
    full = profiles @ index_rows(content, 3.0 * model.item, None).T
    projected = (profiles @ proj.query) @ index_rows(content, 3.0 * model.item, proj.item).T
    np.testing.assert_allclose(projected, full, atol=1e-3 * np.abs(full).max())


def test_the_projection_is_fitted_on_every_user_up_to_its_limit_then_on_a_seeded_sample(monkeypatch):
    histories = [np.array([u % 7]) for u in range(12)] + [np.array([], dtype=np.int64)]
    monkeypatch.setattr(projection, "PROJECTION_USERS", 20)
    assert len(projection.projection_sample(histories, seed=0)) == 12  # the empty history left out
    monkeypatch.setattr(projection, "PROJECTION_USERS", 5)
    a, b = projection.projection_sample(histories, 1), projection.projection_sample(histories, 1)
    assert len(a) == 5 and [h.tolist() for h in a] == [h.tolist() for h in b]  # seeded
    picked = [next(i for i, h in enumerate(histories) if h is s) for s in a]
    assert picked == sorted(picked)  # in the users' order
