"""The evaluation's data: the catalog, the interactions it can use, the per-user split,
and the histories and popularity each stage may see (nothing from its own hold-out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from groundrec.offline import catalog as catalog_stage
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.splits import EvalUsers, Split, eval_users, split_interactions
from groundrec.offline.interactions import Interactions, load_interactions
from groundrec.shared.errors import UserError
from groundrec.shared.scoring.popularity import counts_of_rows


@dataclass
class EvalData:
    items: pa.Table
    inter: Interactions
    split: Split
    valid: EvalUsers
    test: EvalUsers
    valid_histories: list[np.ndarray]  # each user's training part: what validation may see
    test_histories: list[np.ndarray]  # training + validation parts: what test may see
    pop_valid: np.ndarray
    pop_test: np.ndarray

    @property
    def n_items(self) -> int:
        return self.items.num_rows

    def history_times(self, stage: str) -> list[np.ndarray]:
        """Each interaction's time (seconds) in ``valid_histories`` (``stage`` "valid") or
        ``test_histories`` ("test"), aligned with them: what a fit decayed by age weighs."""
        parts = self.split.parts.values()
        positions = ([p.train for p in parts] if stage == "valid"
                     else [np.concatenate([p.train, p.valid]) for p in parts])
        return [self.inter.ts[in_time(self.inter, pos)].astype(np.float64) for pos in positions]


def in_time(inter: Interactions, positions: np.ndarray) -> np.ndarray:
    """``positions`` in time order, ties in input order (the cold_items split interleaves)."""
    return positions[np.lexsort((positions, inter.ts[positions]))]


def read_and_split(cfg: EvalConfig) -> EvalData:
    items = catalog_stage.load_catalog(cfg.catalog)
    ids = items.column(cfg.catalog.id_column).to_pylist()
    inter = load_interactions(cfg.interactions, {iid: r for r, iid in enumerate(ids)})
    split = split_interactions(inter.users, inter.ts, cfg.split, inter.items)
    valid = eval_users(split, "valid", inter.items, inter.ts)
    test = eval_users(split, "test", inter.items, inter.ts)
    if len(test) == 0 or len(valid) == 0:
        raise UserError(f"no user left to evaluate (validation {len(valid)}, test {len(test)}; dropped "
                         f"{test.dropped}); users need interactions on at least two distinct days/parts")
    valid_histories = [inter.items[in_time(inter, p.train)] for p in split.parts.values()]
    test_histories = [inter.items[in_time(inter, np.concatenate([p.train, p.valid]))] for p in split.parts.values()]
    return EvalData(items, inter, split, valid, test, valid_histories, test_histories,
                    counts_of_rows(valid_histories, len(ids)), counts_of_rows(test_histories, len(ids)))
