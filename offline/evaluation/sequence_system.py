"""The learned profile encoder (issue 34) as eval scores it: each test user's history through
the encoder to one query, ranked by inner product against the version's index rows (the
hybrid's content and collaborative columns, or content alone), seen items excluded, with the
freshness prior and the places kept for new items a hybrid version applies to every strategy:
what a ``strategy: sequence`` request to that version answers. A history the encoder makes
nothing of (a zero query) gets the service's popular fallback."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundrec.offline.evaluation.systems import System
from groundrec.shared.scoring import popularity as pop
from groundrec.shared.scoring import ranking
from groundrec.shared.scoring.searcher import Searcher

SEQUENCE = "groundrec sequence encoder"


@dataclass
class SequenceSystem(System):
    name: str
    representation: str
    model: object  # offline.sequence.model.SequenceModel (its ``encode`` is what the ONNX export is checked against)
    index: np.ndarray  # the version's index rows, one per item
    popularity: np.ndarray  # training interactions per item (0: a new item)
    fresh_weight: float = 0.0
    fresh_slots: int = 0
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        self.index = np.ascontiguousarray(self.index, np.float32)
        self.new = pop.new_items(self.popularity)
        self._empty: set[int] = set()

    @property
    def prefix_consistent(self) -> bool:
        return not self.fresh_slots

    def scores(self, histories, history_ts):
        queries = self.model.encode([np.asarray(h, np.int64) for h in histories])
        self._empty = {i for i, q in enumerate(queries) if not q.any()}
        out = queries @ self.index.T
        if self.fresh_weight:
            ranking.lift(out, [self.fresh_weight] * len(out), self.new)
        return out

    def top(self, scores, k, seen):
        return Searcher(len(self.index), self.new if self.fresh_slots else None,
                        counts=self.popularity).top_matrix(scores, k, seen, self.fresh_slots, sorted(self._empty))
