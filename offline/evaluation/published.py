"""eval's ``groundrec published`` row: what the offline job would publish from the test users'
training data, scored as the service answers it. The job's own learn stage
(``offline.learn.learn``: its hold-out of each sampled user's last new item, the one tuner,
the width rule, the refit on every interaction) runs on the training and validation parts of
every user (what test may see), over the best representation's content vectors as the
version's embeddings; the version is then ranked as the service answers a request that sets
nothing (the mean profile, no popularity prior, the version's collaborative weight,
half-life, projection, freshness prior and places kept for new items). A hybrid or content
alone, as the job's selection decides: exactly one row, whenever a representation was built.

The learned profile encoder (``sequence`` in eval's config, the job's own section with the
same defaults): when the job would train it (``sequence.enabled``), the learn stage trains and
chooses it as the job does, and the published row is the encoder where it won. With
``sequence_row`` (or ``sequence.enabled``) the encoder is also a row of its own, ``groundrec
sequence encoder``: trained by the same learn stage and, where it did not win, refitted as it
would have been published (``learn_sequence.train_published``), so it is scored on test
whatever validation decided; ``published_by_validation`` among its settings gives the decision."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from groundrec.offline.config import CollabConfig
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.sequence_system import SEQUENCE, SequenceSystem
from groundrec.offline.evaluation.systems import System, hybrid_system, version_content
from groundrec.offline.interactions import Interactions
from groundrec.shared.scoring.searcher import Searcher

if TYPE_CHECKING:
    from groundrec.offline.evaluation.compare import Runner
    from groundrec.offline.evaluation.data import EvalData

PUBLISHED = "groundrec published"


def training_interactions(data: "EvalData", vectors: np.ndarray | None = None) -> Interactions:
    """Every user's training and validation parts (what test may see), as the job reads
    interactions: with ``vectors``, none on an item without one (a zero row: nothing to embed),
    which the job leaves out of the version with its interactions."""
    parts = [np.concatenate([p.train, p.valid]) for p in data.split.parts.values()]
    at = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    inter = data.inter
    if vectors is not None:
        at = at[np.abs(vectors[inter.items[at]]).sum(axis=1) > 0]
    return Interactions(inter.users[at], inter.items[at], inter.ts[at], inter.user_ids, 0)


def published_systems(runner: "Runner", rep: Representation) -> tuple[System, System | None]:
    """The version the job's learn stage makes of the test users' training data, as served,
    and the learned profile encoder's row (None unless it was trained)."""
    from groundrec.offline.learn import learn

    data, grid, cfg = runner.data, runner.cfg.tuning.collab, runner.cfg
    trains = cfg.sequence.active(True) or cfg.sequence_row
    sequence = cfg.sequence.model_copy(update={"enabled": True}) if trains else None
    inter = training_interactions(data, rep.vectors)
    learned = learn(inter, rep.vectors, CollabConfig(**grid.model_dump()), cfg.seed, sequence=sequence)
    c = learned.choice
    recent = Searcher.recent_prior_of(c.recent_weight, learned.recent)  # the version's own prior, as it serves it
    content = version_content(PUBLISHED, rep.name, rep.vectors, data.pop_test, recent, c.profile_half_life_days)
    if not learned.hybrid:
        hybrid = replace(content, params={"weight": 0.0, "recent_weight": c.recent_weight,
                                          "profile_half_life_days": c.profile_half_life_days})
    else:
        params = {"reg": c.reg, "dropout": c.dropout, "half_life": c.query_half_life, "weight": c.weight,
                  "rank": learned.model.rank, "projected": c.projected, "fresh_weight": c.fresh_weight,
                  "fresh_slots": c.fresh_slots, "recent_weight": c.recent_weight,
                  "train_half_life_days": c.train_half_life_days}
        hybrid = hybrid_system(PUBLISHED, f"{rep.name} + interactions", content, learned.model, c.weight,
                               learned.projection, params, c.query_half_life, c.fresh_weight, c.fresh_slots)
    encoder = _encoder_system(learned, sequence, inter, rep, data.pop_test, cfg.seed,
                              hybrid if learned.hybrid else None)
    if encoder is not None and cfg.sequence.active(True) and learned.sequence.published:
        return replace(encoder, name=PUBLISHED), encoder
    return hybrid, encoder


def _encoder_system(learned, sequence, inter: Interactions, rep: Representation, popularity: np.ndarray,
                    seed: int, hybrid: System | None = None) -> SequenceSystem | None:
    """The encoder the learn stage trained, as it would be published (refitted on every
    history when validation did not choose it), its lists holding the new items of
    ``hybrid``'s (the version's hybrid); None when it was not trained."""
    from groundrec.offline import learn_sequence
    from groundrec.offline.learn import histories_in_time_order, in_window, index_vectors

    outcome = learned.sequence
    if outcome is None or (outcome.model is None and outcome.chosen is None):
        return None
    index = index_vectors(rep.vectors, learned)
    if outcome.model is None:  # not published: refitted as the job would have
        histories, times = histories_in_time_order(in_window(inter, learned.report.window.days), with_times=True)
        learn_sequence.train_published(outcome, sequence, histories, rep.vectors, learned.model, index, seed,
                                       times=times)
    v = outcome.validation
    params = {**{k: outcome.config[k] for k in ("dim", "blocks", "max_len") if k in outcome.config},
              "published_by_validation": outcome.published, "validation_encoder": v.get("encoder"),
              "validation_hybrid": v.get("hybrid"), "new_items": "the hybrid's" if hybrid is not None else "none"}
    representation = f"{rep.name} + interactions" if learned.hybrid else rep.name
    return SequenceSystem(SEQUENCE, representation, outcome.model, index, popularity, hybrid, params=params,
                          recent_prior=Searcher.recent_prior_of(learned.choice.recent_weight, learned.recent))


def published_row(runner: "Runner", rep: Representation) -> None:
    published, encoder = published_systems(runner, rep)
    runner.on_test(published, None, rep.note)
    if encoder is not None:  # params["published_by_validation"]: whether the job would have published it
        runner.on_test(encoder, encoder.params.get("validation_encoder"), rep.note)
