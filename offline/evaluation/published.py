"""eval's ``groundrec published`` row: what the offline job would publish from the test users'
training data, scored as the service answers it. The job's own learn stage
(``offline.learn.learn``: its hold-out of each sampled user's last new item, the one tuner,
the width rule, the refit on every interaction) runs on the training and validation parts of
every user (what test may see), over the best representation's content vectors as the
version's embeddings; the version is then ranked as the service answers a request that sets
nothing (the mean profile, no popularity prior, the version's collaborative weight,
half-life, projection, freshness prior and places kept for new items). A hybrid or content
alone, as the job's selection decides: exactly one row, whenever a representation was built."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from groundrec.offline.config import CollabConfig
from groundrec.offline.evaluation.representations import Representation
from groundrec.offline.evaluation.systems import ContentSystem, System, hybrid_system
from groundrec.offline.interactions import Interactions

if TYPE_CHECKING:
    from groundrec.offline.evaluation.compare import Runner
    from groundrec.offline.evaluation.data import EvalData

PUBLISHED = "groundrec published"


def training_interactions(data: "EvalData") -> Interactions:
    """Every user's training and validation parts (what test may see), as the job reads
    interactions."""
    parts = [np.concatenate([p.train, p.valid]) for p in data.split.parts.values()]
    at = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    inter = data.inter
    return Interactions(inter.users[at], inter.items[at], inter.ts[at], inter.user_ids, 0)


def published_system(runner: "Runner", rep: Representation) -> System:
    """The version the job's learn stage makes of the test users' training data, as served."""
    from groundrec.offline.learn import learn

    data, grid = runner.data, runner.cfg.tuning.collab
    learned = learn(training_interactions(data), rep.vectors, CollabConfig(**grid.model_dump()), runner.cfg.seed)
    content = ContentSystem(PUBLISHED, rep.name, rep.vectors, data.pop_test)  # a request's defaults: mean, no prior
    c = learned.choice
    if not learned.hybrid:
        return replace(content, params={"weight": 0.0})
    params = {"reg": c.reg, "dropout": c.dropout, "half_life": c.query_half_life, "weight": c.weight,
              "rank": learned.model.rank, "projected": c.projected, "fresh_weight": c.fresh_weight,
              "fresh_slots": c.fresh_slots}
    return hybrid_system(PUBLISHED, f"{rep.name} + interactions", content, learned.model, c.weight,
                         learned.projection, params, c.query_half_life, c.fresh_weight, c.fresh_slots)


def published_row(runner: "Runner", rep: Representation) -> None:
    runner.on_test(published_system(runner, rep), None, rep.note)
