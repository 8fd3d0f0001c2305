"""The learned profile encoder (issue 34) as eval scores it: each test user's history through
the encoder to one query, ranked by inner product against the version's index rows (the
hybrid's content and collaborative columns, or content alone), seen items excluded; on a
hybrid version each list then holds the new items of the hybrid's own list for that user
(``places``: its freshness lift and kept places; ``Searcher.holding_new_of``): what a
``strategy: sequence`` request to that version answers. A history the encoder makes nothing
of (a zero query) gets the service's popular fallback."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundrec.offline.evaluation.systems import System
from groundrec.shared.scoring import popularity as pop
from groundrec.shared.scoring.searcher import Searcher

SEQUENCE = "groundrec sequence encoder"


@dataclass
class SequenceSystem(System):
    name: str
    representation: str
    model: object  # offline.sequence.model.SequenceModel (its ``encode`` is what the ONNX export is checked against)
    index: np.ndarray  # the version's index rows, one per item
    popularity: np.ndarray  # training interactions per item (0: a new item)
    places: System | None = None  # the version's hybrid: which new items a list holds, and how many
    params: dict = field(default_factory=dict)
    recent_prior: np.ndarray | None = None  # the version's recent-popularity prior, added to every item's score

    def __post_init__(self):
        self.index = np.ascontiguousarray(self.index, np.float32)
        self.new = pop.new_items(self.popularity)
        self._empty: set[int] = set()
        self._hybrid: np.ndarray | None = None  # the hybrid's scores of the users last scored

    @property
    def prefix_consistent(self) -> bool:
        return self.places is None  # a list of k holds the new items of the hybrid's list of k

    def scores(self, histories, history_ts):
        queries = self.model.encode([np.asarray(h, np.int64) for h in histories])
        self._empty = {i for i, q in enumerate(queries) if not q.any()}
        if self.places is not None:
            self._hybrid = self.places.scores(histories, history_ts)
        scores = queries @ self.index.T
        return scores if self.recent_prior is None else scores + self.recent_prior

    def top(self, scores, k, seen):
        searcher = Searcher(len(self.index), self.new, counts=self.popularity)
        others = None
        if self.places is not None:
            assert len(self._hybrid) == len(scores), "top() ranks the users scores() scored last"
            others = self.places.top(self._hybrid.copy(), k, seen)
        return searcher.top_matrix(scores, k, seen, 0, sorted(self._empty), others)
