"""Learn stage of the offline job: the collaborative part of a hybrid version.

From the interactions (mapped onto the items being published) and the items' content
embeddings: hold out each sampled user's last new item (``holdout``), tune the hybrid on
those users with the one tuner (``tuning.tune_hybrid``: the collaborative model, its
regularisation, the query's half-life and the weight; the width and the projection; the
freshness prior and the places kept for new items), scored by ``job_scorer.JobScorer`` (recall@K of
content alone, collaborative alone and the hybrid, all recorded), then refit on every
interaction in the window. The hybrid score is exactly what the service computes: cosine of
the mean content profile + weight x the collaborative score (``offline.collab``), through
the projection when there is one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from groundrec.offline import collab, learn_sequence
from groundrec.offline.collab_grid import CollabGrid
from groundrec.offline.config import CollabConfig
from groundrec.offline.holdout import hold_out_recent, items_to_hold_out
from groundrec.offline.interactions import Interactions
from groundrec.offline.job_scorer import JobScorer
from groundrec.offline.learn_report import LearnReport, Window
from groundrec.offline.learn_sequence import SequenceOutcome
from groundrec.offline.projection import project
from groundrec.offline.sequence_config import SequenceJobConfig
from groundrec.offline.tuning import HYBRID_AXES, HybridChoice, tune_hybrid
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.collab import index_rows
from groundrec.shared.scoring.popularity import RecentAsOf, counts_of_rows, flat_histories, recent_histories


@dataclass
class Learned:
    model: collab.CollabModel | None  # None: validation chose weight 0, the version is content only
    report: LearnReport  # what was chosen and scored; the manifest records ``report.to_manifest()``
    projection: collab.Projection | None = None  # a hybrid indexed at the content's width
    counts: np.ndarray | None = None  # interactions per published item in the window (what "new" means)
    sequence: "SequenceOutcome | None" = None  # the learned profile encoder's scores and decision (None: not trained)
    recent: np.ndarray | None = None  # interactions per item in the window's last recent_days (a chosen recent prior)
    grid: CollabGrid | None = None  # the grid the version was fitted with (``version_form``: exact or factorised)

    @property
    def hybrid(self) -> bool:
        return self.model is not None

    @property
    def choice(self) -> HybridChoice:
        return self.report.choice

    @property
    def weight(self) -> float:
        return self.choice.weight


def histories_in_time_order(inter: Interactions, with_times: bool = False):
    """Each user's item rows, oldest first (users with no interaction are left out); with
    ``with_times``, (histories, each one's timestamps)."""
    order = np.lexsort((inter.ts, inter.users))
    users, items = inter.users[order], inter.items[order]
    cuts = np.flatnonzero(np.diff(users)) + 1
    histories = [h for h in np.split(items, cuts) if len(h)]
    if not with_times:
        return histories
    return histories, [t for t in np.split(inter.ts[order], cuts) if len(t)]


def in_window(inter: Interactions, days: float | None) -> Interactions:
    if days is None or len(inter.ts) == 0:
        return inter
    keep = inter.ts >= inter.ts.max() - days * 86_400
    return Interactions(inter.users[keep], inter.items[keep], inter.ts[keep], inter.user_ids, inter.dropped_unknown_items)


def fit_chosen(histories: list[np.ndarray], n_items: int, content: np.ndarray | None, grid, choice: HybridChoice,
               seed: int = 0, times: list[np.ndarray] | None = None) -> collab.CollabModel:
    """The chosen model refitted on ``histories`` (more than it was chosen on) as published:
    at its own full rank when validation kept the full rank (an exact model's head may have
    grown), else truncated to the chosen rank, its interactions decayed by age as chosen
    (``times``: each history's, required then). The learn stage, the gate and eval refit so."""
    if choice.train_half_life_days and times is None:
        raise ValueError("a model chosen with its interactions decayed by age is refitted with their times")
    weights = collab.decay_weights(times, choice.train_half_life_days) if choice.train_half_life_days else None
    model = collab.fit_grid(histories, n_items, content, grid, choice.reg, choice.dropout, seed, weights)
    return model if choice.full_rank else model.truncated(choice.rank)


def version_form(cfg: CollabGrid, histories: list[np.ndarray], n_items: int, dim: int) -> CollabGrid:
    """A grid (the job's ``collab``, eval's ``tuning.collab``) with the full-rank budget decided
    once, on the version's own head (the whole window's, ``histories``): where that head is past
    ``full_rank_max_mb`` the refit is factorised, and so are validation's fits, whose head
    (without its held-out items) can be smaller and fit it. The learn stage and eval's
    collaborative rows call it; the gate refits the candidate with the grid it returned
    (``Learned.grid``)."""
    head = collab.head_items(counts_of_rows(histories, n_items), cfg.max_dense_items)
    if collab.full_rank_fits(len(head), n_items, dim, cfg.full_rank_max_mb):
        return cfg
    return cfg.model_copy(update={"full_rank_max_mb": 0.0})


def window_time(t: float, up: bool = True) -> str:
    """A window bound as an ISO time to the microsecond, rounded outwards (``up`` for its end):
    the gate's window begins after the end, so a bound cut to whole seconds made the last
    second's events (fractional times, as POST /events stores them) targets of the gate."""
    micros = math.ceil(float(t) * 1e6) if up else math.floor(float(t) * 1e6)
    return (datetime.fromtimestamp(micros // 1_000_000, timezone.utc)
            + timedelta(microseconds=micros % 1_000_000)).isoformat()


def learn(inter: Interactions, content: np.ndarray, cfg: CollabConfig, seed: int = 0,
          sequence: SequenceJobConfig | None = None, runner=None) -> Learned:
    """``sequence``: the learned profile encoder's settings; when given and enabled it is trained
    and chosen against the hybrid on the same validation users (``learn_sequence``), its
    trainings Ray tasks when ``runner`` is the job's Ray runner."""
    started = time.perf_counter()
    inter = in_window(inter, cfg.window_days)
    histories, times = histories_in_time_order(inter, with_times=True)
    if len(histories) < 2 or len(np.unique(inter.items)) < 2:
        raise UserError(f"interactions: {len(inter.items)} usable rows from {len(histories)} users; a hybrid version "
                         "needs interactions with at least 2 published items (check interactions.item_column matches "
                         "the catalog ids)")
    n = len(content)
    cfg = version_form(cfg, histories, n, content.shape[1])
    held_out = hold_out_recent(histories, cfg.valid_users, items_to_hold_out(cfg.valid_items, n), seed, times)
    choice, tuning, scores = HybridChoice.untuned(cfg), None, {}  # no validation user: content only, nothing scored
    outcome = None
    if held_out.users:
        at = [times[u][len(held_out.train[u])] for u in held_out.users]  # each validation user's held-out time
        recent = RecentAsOf(*flat_histories(held_out.train, times), at, n, cfg.recent_days) if any(
            cfg.recent_weight) else None
        scorer = JobScorer(content, held_out, cfg, seed, recent, times)
        choice, tuning = tune_hybrid(cfg, scorer, "collab")
        scores = scorer.scores
        if sequence is not None and sequence.active(True):
            outcome = learn_sequence.choose(sequence, scorer, held_out.users, choice, tuning, seed, runner=runner,
                                            times=times)
    elif sequence is not None and sequence.active(True):
        outcome = learn_sequence.SequenceOutcome(False, "not trained: no validation user (no user's last item is new "
                                                 "to them)")
    # Weight 0 scores exactly as content alone: publish content only (no refit, an index no
    # wider than the embeddings) and keep the report of what was tried.
    model = projection = None
    if choice.hybrid:
        model = fit_chosen(histories, n, content, cfg, choice, seed, times)
        if choice.projected:
            projection = project(content, model, choice.weight, histories, seed, choice.half_life)
    if outcome is not None and outcome.published:  # trained again for the final index (``index_vectors``)
        final = content if model is None else index_rows(content, choice.weight * model.item,
                                                         projection.item if projection is not None else None)
        learn_sequence.train_published(outcome, sequence, histories, content, model, final, seed, runner=runner,
                                       times=times)
    report = LearnReport(
        model=model.info if model else {"model": collab.model_name(choice.dropout), "rank": cfg.rank, "reg": choice.reg,
                                        "dropout": choice.dropout},
        choice=choice,
        window=Window(cfg.window_days, window_time(inter.ts.min(), up=False), window_time(inter.ts.max()), int(len(inter.items)), len(histories),
                      int(inter.dropped_unknown_items)),
        validation_users=len(held_out.users), validation_items=len(held_out.targets),
        axes=tuning.grid.axes if tuning else {axis: getattr(cfg, axis) for axis in HYBRID_AXES},
        scores=scores, tuning=tuning, projection=projection.info if projection else None, recent_days=cfg.recent_days,
        seconds=round(time.perf_counter() - started, 2))
    recent = recent_histories(histories, times, n, cfg.recent_days) if choice.recent_weight else None
    return Learned(model, report, projection, counts_of_rows(histories, n) if model is not None else None, outcome,
                   recent, cfg)


def index_vectors(content: np.ndarray, learned: Learned | None) -> np.ndarray:
    """What the index holds: the content embeddings, and for a hybrid the item-side
    collaborative vectors times the weight beside them, projected to the content's width when
    validation allowed it."""
    if learned is None or not learned.hybrid:
        return content
    return index_rows(content, learned.weight * learned.model.item,
                      learned.projection.item if learned.projection is not None else None)
