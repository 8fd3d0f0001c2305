"""Learn stage of the offline job: the collaborative part of a hybrid version.

From the interactions (mapped onto the items being published) and the items' content
embeddings: hold out each sampled user's last new item (``holdout``), tune the hybrid on
those users with the one tuner (``tuning.tune_hybrid``: the collaborative model, its
regularisation, the query's half-life and the weight; the width and the projection; the
freshness prior and the places kept for new items), scored here by ``JobScorer`` (recall@K of
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
from groundrec.offline.config import CollabConfig
from groundrec.offline.holdout import (HeldOut, content_profiles, hold_out_recent, items_to_hold_out, published_hits,
                                      published_lists, validation_hits)
from groundrec.offline.interactions import Interactions
from groundrec.offline.learn_report import LearnReport, Window
from groundrec.offline.learn_sequence import SequenceOutcome
from groundrec.offline.sequence_config import SequenceJobConfig
from groundrec.offline.tuning import HYBRID_AXES, HybridChoice, tune_hybrid
from groundrec.offline.width_rule import user_slices
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.collab import collab_queries, hybrid_queries, index_rows
from groundrec.shared.scoring.popularity import (RecentAsOf, counts_of_rows, flat_histories, new_items,
                                                 recent_histories)
from groundrec.shared.scoring.profiles import latest, mean_profiles
from groundrec.shared.scoring.searcher import Searcher

PROJECTION_USERS = 20_000  # most training users whose profiles fit the projection


@dataclass
class Learned:
    model: collab.CollabModel | None  # None: validation chose weight 0, the version is content only
    report: LearnReport  # what was chosen and scored; the manifest records ``report.to_manifest()``
    projection: collab.Projection | None = None  # a hybrid indexed at the content's width
    counts: np.ndarray | None = None  # interactions per published item in the window (what "new" means)
    sequence: "SequenceOutcome | None" = None  # the learned profile encoder's scores and decision (None: not trained)
    recent: np.ndarray | None = None  # interactions per item in the window's last recent_days (a chosen recent prior)

    hybrid = property(lambda self: self.model is not None)
    choice = property(lambda self: self.report.choice)

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


def hybrid_profiles(content: np.ndarray, model: collab.CollabModel, histories: list[np.ndarray],
                    half_life: float = 0.0) -> np.ndarray:
    """Full-width hybrid profiles, as the service builds them: the mean content profile beside
    the collaborative query (both over the latest items)."""
    recent = [latest(h) for h in histories]
    return hybrid_queries(mean_profiles(content, recent), collab_queries(model.query, recent, half_life), None)


def _projection_sample(histories: list[np.ndarray], seed: int) -> list[np.ndarray]:
    usable = [h for h in histories if len(h)]
    if len(usable) <= PROJECTION_USERS:
        return usable
    return [usable[i] for i in np.sort(np.random.default_rng(seed).choice(len(usable), PROJECTION_USERS, replace=False))]


def project(content: np.ndarray, model: collab.CollabModel, weight: float, histories: list[np.ndarray],
            seed: int = 0, half_life: float = 0.0) -> collab.Projection:
    """The projection of a hybrid to the content's width, fitted on these users' profiles."""
    return collab.fit_projection([content, weight * model.item],
                                 hybrid_profiles(content, model, _projection_sample(histories, seed), half_life),
                                 content.shape[1])


def _dropout(dropout: float) -> str:
    return f" dropout={dropout:g}" if dropout else ""


def _hl(half_life: float) -> str:
    """The half-life's part of a validation score's name (none when the query has no decay)."""
    return f" half_life={half_life:g}" if half_life else ""


def _name(reg: float, dropout: float, half_life: float) -> str:
    return f"reg={reg:g}{_dropout(dropout)}{_hl(half_life)}"


class JobScorer:
    """The learn stage's ``tuning.HybridScorer``: per held-out user, the recall of their held-out
    last new item(s) (``holdout.HeldOut``: hits per row, averaged per user), every mean recorded
    by name in ``scores`` (what the manifest's ``validation.scores`` holds). ``held`` and
    ``targets`` are per row (a user may have several); ``profiles`` and ``user_held`` per user
    (each user's rows are scored from one list: ``owner``, each row's user)."""

    def __init__(self, content: np.ndarray, held_out: HeldOut, cfg: CollabConfig, seed: int = 0,
                 recent: RecentAsOf | None = None):
        self.content, self.held_out, self.cfg, self.seed = content, held_out, cfg, seed
        self.recent_counts, self.recent = recent, recent is not None  # each validation user's, as of their time
        self.train, self.held, self.targets = held_out.train, held_out.histories, held_out.targets
        self.user_held, self.owner = held_out.user_histories, held_out.rows
        self.content_dim = content.shape[1]
        self.profiles = content_profiles(content, self.user_held)
        self.scores: dict[str, float] = {}
        self.fits: dict[tuple[float, float], collab.CollabModel] = {}
        self.projections: dict[int, collab.Projection] = {}
        self.new = new_items(counts_of_rows(self.train, len(content)))  # new items: no interaction in the training part
        self.has_new = len(self.new) > 0
        self.slices = user_slices(held_out.targets_by_user, self.new)  # what the width rule judges apart

    def fitted(self, reg: float, dropout: float) -> collab.CollabModel:
        # The grid is scored one model at a time: keep the three fits used last (each is
        # 2 x items x rank floats, 1 GB at 1M items), not one per grid point; three, so the
        # chosen model outlives the two fits of the refinement around it.
        fits = self.fits
        if (reg, dropout) not in fits:
            while len(fits) >= 3:
                fits.pop(next(iter(fits)))
            fits[reg, dropout] = collab.fit_grid(self.train, len(self.content), self.content, self.cfg, reg, dropout,
                                                 self.seed)
        fits[reg, dropout] = fits.pop((reg, dropout))  # the most recently used last
        return fits[reg, dropout]

    def _validation(self, model: collab.CollabModel, weights: list[float], half_life: float) -> dict:
        hits = validation_hits(model, self.content, self.profiles, self.user_held, self.targets, weights, half_life,
                               self.owner)
        return {key: self.held_out.per_user(value) for key, value in hits.items()}

    def prior(self, choice: HybridChoice):
        """``choice``'s recent-popularity prior per validation user (users -> a row each, as of
        their own time), or None; ``row_prior``: per validation row (a slice -> its users' rows)."""
        if choice.recent_weight and self.recent_counts is not None:
            return lambda users: Searcher.recent_prior_of(choice.recent_weight, self.recent_counts(users))

    def row_prior(self, choice: HybridChoice):
        prior = self.prior(choice)
        return None if prior is None else (lambda rows: prior(self.owner[rows]))

    def _published(self, model: collab.CollabModel, weight: float, projection: collab.Projection | None,
                   half_life: float, new: np.ndarray | None = None, fresh=((0.0, 0),), prior=None) -> dict:
        hits = published_hits(model, self.content, self.profiles, self.user_held, self.targets, weight, projection,
                              half_life, new, fresh, self.owner, prior)
        return {key: self.held_out.per_user(value) for key, value in hits.items()}

    def published_lists(self, choice: HybridChoice) -> np.ndarray:
        """The hybrid's top-K lists of the validation rows at ``choice`` as published (its freshness
        prior and kept places): the new items a ``sequence`` list of that version holds."""
        c = choice
        return published_lists(self.fitted(c.reg, c.dropout).truncated(c.rank), self.content, self.profiles,
                               self.user_held, c.weight, self.projections.get(c.rank) if c.projected else None,
                               c.half_life, self.new, c.fresh_weight, c.fresh_slots, self.owner, self.prior(c))

    def hybrid(self, reg: float, dropout: float, half_life: float, weights: list[float]) -> list[np.ndarray]:
        hits = self._validation(self.fitted(reg, dropout), weights, half_life)
        name = _name(reg, dropout, half_life)
        self.scores["content"] = float(hits["content"].mean())
        self.scores[f"collaborative {name}"] = float(hits["collaborative"].mean())
        for w in weights:
            self.scores[f"hybrid {name} weight={w:g}"] = float(hits[w].mean())
        return [hits[w] for w in weights]

    def full_rank(self, reg: float, dropout: float) -> int:
        return self.fitted(reg, dropout).rank

    def at_rank(self, choice: HybridChoice, rank: int) -> np.ndarray:
        c, name = choice, _name(choice.reg, choice.dropout, choice.half_life)
        hits = self._validation(self.fitted(c.reg, c.dropout).truncated(rank), [c.weight], c.half_life)
        self.scores[f"collaborative {name} rank={rank}"] = float(hits["collaborative"].mean())
        self.scores[f"hybrid {name} rank={rank} weight={c.weight:g}"] = float(hits[c.weight].mean())
        return hits[c.weight]

    def projected(self, choice: HybridChoice, rank: int) -> np.ndarray:
        c, name = choice, _name(choice.reg, choice.dropout, choice.half_life)
        ranked = self.fitted(c.reg, c.dropout).truncated(rank)
        self.projections[rank] = project(self.content, ranked, c.weight, self.train, self.seed, c.half_life)
        hits = self._published(ranked, c.weight, self.projections[rank], c.half_life)[0.0, 0]
        self.scores[f"hybrid {name} rank={rank} weight={c.weight:g} projected to {self.content_dim}"] = float(hits.mean())
        return hits

    def published(self, choice: HybridChoice, fresh: list[tuple[float, int]]) -> list[np.ndarray]:
        c = choice
        hits = self._published(self.fitted(c.reg, c.dropout).truncated(c.rank), c.weight,
                               self.projections.get(c.rank) if c.projected else None, c.half_life, self.new, tuple(fresh),
                               self.prior(c))
        for fw, slots in fresh:
            self.scores[f"published fresh_weight={fw:g}" + (f" fresh_slots={slots}" if slots else "") +
                        (f" recent_weight={c.recent_weight:g}" if c.recent_weight else "")] = float(hits[fw, slots].mean())
        return [hits[point] for point in fresh]


def fit_chosen(histories: list[np.ndarray], n_items: int, content: np.ndarray | None, grid, choice: HybridChoice,
               seed: int = 0) -> collab.CollabModel:
    """The chosen model refitted on ``histories`` (more than it was chosen on) as published:
    at its own full rank when validation kept the full rank (an exact model's head may have
    grown), else truncated to the chosen rank. The learn stage, the gate and eval refit so."""
    model = collab.fit_grid(histories, n_items, content, grid, choice.reg, choice.dropout, seed)
    return model if choice.full_rank else model.truncated(choice.rank)


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
    held_out = hold_out_recent(histories, cfg.valid_users, items_to_hold_out(cfg.valid_items, n), seed, times)
    choice, tuning, scores = HybridChoice.untuned(cfg), None, {}  # no validation user: content only, nothing scored
    outcome = None
    if held_out.users:
        at = [times[u][len(held_out.train[u])] for u in held_out.users]  # each validation user's held-out time
        recent = RecentAsOf(*flat_histories(held_out.train, times), at, n, cfg.recent_days) if any(
            cfg.recent_weight) else None
        scorer = JobScorer(content, held_out, cfg, seed, recent)
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
        model = fit_chosen(histories, n, content, cfg, choice, seed)
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
                   recent)


def index_vectors(content: np.ndarray, learned: Learned | None) -> np.ndarray:
    """What the index holds: the content embeddings, and for a hybrid the item-side
    collaborative vectors times the weight beside them, projected to the content's width when
    validation allowed it."""
    if learned is None or not learned.hybrid:
        return content
    return index_rows(content, learned.weight * learned.model.item,
                      learned.projection.item if learned.projection is not None else None)
