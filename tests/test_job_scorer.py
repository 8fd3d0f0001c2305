"""offline/job_scorer.py: the learn stage's validation scorer records every score by name,
scores weight 0 as content alone, and keeps only the last few fits."""

import numpy as np

from groundrec.offline.config import CollabConfig
from groundrec.offline.holdout import hold_out_recent
from groundrec.offline.job_scorer import JobScorer


def _scorer(full_rank_max_mb: float) -> JobScorer:
    rng = np.random.default_rng(4)
    n, d = 40, 8
    content = rng.normal(size=(n, d)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    histories = [rng.choice(n, size=10, replace=False) for _ in range(60)]
    times = [np.arange(len(h), dtype=np.float64) for h in histories]
    held = hold_out_recent(histories, 100, 1000, 0, times)
    assert held.users  # every history's later half holds new items
    return JobScorer(content, held, CollabConfig(rank=8, full_rank_max_mb=full_rank_max_mb), seed=0)


def test_every_candidate_is_recorded_by_name_and_weight_0_scores_as_content_alone():
    scorer = _scorer(0.0)
    hits = scorer.hybrid(10.0, 0.0, 2.0, [0.0, 1.0])
    s = scorer.scores
    assert {"content", "collaborative reg=10 half_life=2", "hybrid reg=10 half_life=2 weight=0",
            "hybrid reg=10 half_life=2 weight=1"} <= set(s)
    assert s["hybrid reg=10 half_life=2 weight=0"] == s["content"] == hits[0].mean()
    assert s["hybrid reg=10 half_life=2 weight=1"] == hits[1].mean() and len(hits[1]) == len(scorer.held_out.users)


def test_the_model_s_own_rank_follows_the_budget():
    assert _scorer(0.0).full_rank(10.0, 0.0) == 8  # factorised at collab.rank
    exact = _scorer(64.0)
    assert exact.full_rank(10.0, 0.0) == int(exact.fitted(10.0, 0.0).fitted.sum()) > 8  # a row of B per head item


def test_only_the_three_fits_used_last_are_kept():
    scorer = _scorer(0.0)
    for reg in (1.0, 10.0, 100.0, 1000.0):
        scorer.fitted(reg, 0.0)
    scorer.fitted(10.0, 0.0)  # used again: now the most recent
    assert list(scorer.fits) == [(100.0, 0.0, 0.0), (1000.0, 0.0, 0.0), (10.0, 0.0, 0.0)]  # (reg, dropout, decay)
