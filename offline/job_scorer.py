"""The learn stage's validation scorer (``JobScorer``, a ``tuning.HybridScorer``): what each
candidate of the hybrid's search scores on the job's held-out users, every mean recorded by
name (the manifest's ``validation.scores``)."""

from __future__ import annotations

import numpy as np

from groundrec.offline import collab
from groundrec.offline.config import CollabConfig
from groundrec.offline.holdout import HeldOut, published_hits, published_lists, validation_hits
from groundrec.offline.projection import project
from groundrec.offline.tuning import HybridChoice
from groundrec.offline.width_rule import user_slices
from groundrec.shared.scoring.popularity import RecentAsOf, counts_of_rows, new_items
from groundrec.shared.scoring.profiles import recency_profiles
from groundrec.shared.scoring.searcher import Searcher


def _dropout(dropout: float) -> str:
    return f" dropout={dropout:g}" if dropout else ""


def _hl(half_life: float) -> str:
    """The half-life's part of a validation score's name (none when the query has no decay)."""
    return f" half_life={half_life:g}" if half_life else ""


def _name(reg: float, dropout: float, half_life: float, decay: float = 0.0) -> str:
    return f"reg={reg:g}{_dropout(dropout)}{_hl(half_life)}" + (f" train_half_life_days={decay:g}" if decay else "")


class JobScorer:
    """The learn stage's ``tuning.HybridScorer``: per held-out user, the recall of their held-out
    last new item(s) (``holdout.HeldOut``: hits per row, averaged per user), every mean recorded
    by name in ``scores`` (what the manifest's ``validation.scores`` holds). ``held`` and
    ``targets`` are per row (a user may have several); ``profiles`` and ``user_held`` per user
    (each user's rows are scored from one list: ``owner``, each row's user)."""

    def __init__(self, content: np.ndarray, held_out: HeldOut, cfg: CollabConfig, seed: int = 0,
                 recent: RecentAsOf | None = None, times: list[np.ndarray] | None = None):
        self.content, self.held_out, self.cfg, self.seed = content, held_out, cfg, seed
        self.recent_counts, self.recent = recent, recent is not None  # each validation user's, as of their time
        self.train, self.held, self.targets = held_out.train, held_out.histories, held_out.targets
        self.user_held, self.owner = held_out.user_histories, held_out.rows
        self.content_dim = content.shape[1]
        self.profiles = recency_profiles(content, self.user_held)
        # each held-out user's times before their block (``times``: every user's, sorted): the
        # content profile's recency can be scored (content alone's ``tune_profile``)
        self.profile_times = times is not None
        self._user_times = [times[u][:len(self.train[u])] for u in held_out.users] if times is not None else None
        # every user's training part's times: a fit can decay its interactions by age (``tune_decay``)
        self._train_times = [t[:len(h)] for t, h in zip(times, self.train)] if times is not None else None
        self.fit_times = times is not None
        self._recency: dict[float, np.ndarray] = {0.0: self.profiles}
        self.scores: dict[str, float] = {}
        self.fits: dict[tuple[float, float, float], collab.CollabModel] = {}  # (reg, dropout, decay)
        self.projections: dict[int, collab.Projection] = {}
        self.new = new_items(counts_of_rows(self.train, len(content)))  # new items: no interaction in the training part
        self.has_new = len(self.new) > 0
        self.slices = user_slices(held_out.targets_by_user, self.new)  # what the width rule judges apart

    def fitted(self, reg: float, dropout: float, decay: float = 0.0) -> collab.CollabModel:
        # The grid is scored one model at a time: keep the three fits used last (each is
        # 2 x items x rank floats, 1 GB at 1M items), not one per grid point; three, so the
        # chosen model outlives the two fits of the refinement around it.
        fits = self.fits
        key = (reg, dropout, decay)
        if key not in fits:
            while len(fits) >= 3:
                fits.pop(next(iter(fits)))
            fits[key] = collab.fit_grid(self.train, len(self.content), self.content, self.cfg, reg, dropout, self.seed,
                                        collab.decay_weights(self._train_times, decay) if decay else None)
        fits[key] = fits.pop(key)  # the most recently used last
        return fits[key]

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

    def profiles_at(self, half_life_days: float) -> np.ndarray:
        """The held-out users' content profiles with that recency (0: the mean, ``profiles``)."""
        if half_life_days not in self._recency:
            self._recency[half_life_days] = recency_profiles(self.content, self.user_held, self._user_times,
                                                             half_life_days)
        return self._recency[half_life_days]

    def _published(self, model: collab.CollabModel, weight: float, projection: collab.Projection | None,
                   half_life: float, new: np.ndarray | None = None, fresh=((0.0, 0),), prior=None,
                   profile_days: float = 0.0) -> dict:
        hits = published_hits(model, self.content, self.profiles_at(profile_days), self.user_held, self.targets, weight,
                              projection, half_life, new, fresh, self.owner, prior)
        return {key: self.held_out.per_user(value) for key, value in hits.items()}

    def published_lists(self, choice: HybridChoice) -> np.ndarray:
        """The hybrid's top-K lists of the validation rows at ``choice`` as published (its freshness
        prior and kept places): the new items a ``sequence`` list of that version holds."""
        c = choice
        return published_lists(self.fitted(c.reg, c.dropout, c.train_half_life_days).truncated(c.rank), self.content,
                               self.profiles_at(c.profile_half_life_days),
                               self.user_held, c.weight, self.projections.get(c.rank) if c.projected else None,
                               c.half_life, self.new, c.fresh_weight, c.fresh_slots, self.owner, self.prior(c))

    def hybrid(self, reg: float, dropout: float, half_life: float, weights: list[float],
               train_half_life_days: float = 0.0) -> list[np.ndarray]:
        hits = self._validation(self.fitted(reg, dropout, train_half_life_days), weights, half_life)
        name = _name(reg, dropout, half_life, train_half_life_days)
        self.scores["content"] = float(hits["content"].mean())
        self.scores[f"collaborative {name}"] = float(hits["collaborative"].mean())
        for w in weights:
            self.scores[f"hybrid {name} weight={w:g}"] = float(hits[w].mean())
        return [hits[w] for w in weights]

    def full_rank(self, reg: float, dropout: float, train_half_life_days: float = 0.0) -> int:
        return self.fitted(reg, dropout, train_half_life_days).rank

    def at_rank(self, choice: HybridChoice, rank: int) -> np.ndarray:
        c, name = choice, _name(choice.reg, choice.dropout, choice.half_life, choice.train_half_life_days)
        model = self.fitted(c.reg, c.dropout, c.train_half_life_days).truncated(rank)
        hits = self._validation(model, [c.weight], c.half_life)
        self.scores[f"collaborative {name} rank={rank}"] = float(hits["collaborative"].mean())
        self.scores[f"hybrid {name} rank={rank} weight={c.weight:g}"] = float(hits[c.weight].mean())
        return hits[c.weight]

    def projected(self, choice: HybridChoice, rank: int) -> np.ndarray:
        c, name = choice, _name(choice.reg, choice.dropout, choice.half_life, choice.train_half_life_days)
        ranked = self.fitted(c.reg, c.dropout, c.train_half_life_days).truncated(rank)
        self.projections[rank] = project(self.content, ranked, c.weight, self.train, self.seed, c.half_life)
        hits = self._published(ranked, c.weight, self.projections[rank], c.half_life)[0.0, 0]
        self.scores[f"hybrid {name} rank={rank} weight={c.weight:g} projected to {self.content_dim}"] = float(hits.mean())
        return hits

    def published(self, choice: HybridChoice, fresh: list[tuple[float, int]]) -> list[np.ndarray]:
        c = choice
        model = self.fitted(c.reg, c.dropout, c.train_half_life_days).truncated(c.rank)
        hits = self._published(model, c.weight, self.projections.get(c.rank) if c.projected else None, c.half_life,
                               self.new, tuple(fresh), self.prior(c), c.profile_half_life_days)
        for fw, slots in fresh:
            self.scores[f"published fresh_weight={fw:g}" + (f" fresh_slots={slots}" if slots else "") +
                        (f" recent_weight={c.recent_weight:g}" if c.recent_weight else "") +
                        (f" profile_half_life_days={c.profile_half_life_days:g}" if c.profile_half_life_days else "")
                        ] = float(hits[fw, slots].mean())
        return [hits[point] for point in fresh]
