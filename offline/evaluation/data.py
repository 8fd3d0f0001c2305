"""The evaluation's data: the catalog, the interactions it can use, the per-user split,
and the histories and popularity each stage may see (nothing from its own hold-out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from groundrec.offline import catalog as catalog_stage
from groundrec.offline.evaluation.config import EvalConfig
from groundrec.offline.evaluation.splits import EvalUsers, Split, eval_users, split_interactions
from groundrec.shared.tables import read_table


@dataclass
class Interactions:
    users: np.ndarray  # user codes
    items: np.ndarray  # catalog rows
    ts: np.ndarray  # seconds
    user_ids: list[str]
    dropped_unknown_items: int


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


def load_interactions(cfg: EvalConfig, item_rows: dict[str, int]) -> Interactions:
    ic = cfg.interactions
    table = read_table(ic.path)
    missing = [c for c in (ic.user_column, ic.item_column, ic.timestamp_column) if c not in table.column_names]
    if missing:
        raise ValueError(f"interactions {ic.path} lack column(s) {missing}; they have {table.column_names}. "
                         "Set interactions.user_column/item_column/timestamp_column in the config")
    ts_col = table.column(ic.timestamp_column)
    # Whole seconds: sub-second parts are truncated (safe=False), never an error.
    if pa.types.is_timestamp(ts_col.type) or pa.types.is_date(ts_col.type):
        ts = pc.cast(pc.cast(ts_col, pa.timestamp("s"), safe=False), pa.int64())
    elif pa.types.is_integer(ts_col.type) or pa.types.is_floating(ts_col.type):
        ts = pc.cast(ts_col, pa.int64(), safe=False)
    else:
        try:
            ts = pc.cast(pc.cast(pc.cast(ts_col, pa.string()), pa.timestamp("ns")), pa.timestamp("s"), safe=False)
            ts = pc.cast(ts, pa.int64())
        except pa.ArrowInvalid as e:
            raise ValueError(f"interactions column {ic.timestamp_column!r} is neither a timestamp, a number of "
                             f"seconds nor an ISO date: {e}") from None
    items = [item_rows.get(i) for i in pc.cast(table.column(ic.item_column), pa.string()).to_pylist()]
    users = pc.cast(table.column(ic.user_column), pa.string()).to_pylist()
    ts_np = np.asarray(ts.to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = [n for n, i in enumerate(items) if i is not None and users[n] is not None]
    user_ids = sorted({users[n] for n in keep})
    code = {u: c for c, u in enumerate(user_ids)}
    return Interactions(np.array([code[users[n]] for n in keep], dtype=np.int64),
                        np.array([items[n] for n in keep], dtype=np.int64), ts_np[keep], user_ids,
                        len(items) - len(keep))


def popularity(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    return np.bincount(np.concatenate(histories), minlength=n_items).astype(np.float64) if histories else np.zeros(n_items)


def read_and_split(cfg: EvalConfig) -> EvalData:
    items = catalog_stage.load_catalog(cfg.catalog)
    ids = items.column(cfg.catalog.id_column).to_pylist()
    inter = load_interactions(cfg, {iid: r for r, iid in enumerate(ids)})
    split = split_interactions(inter.users, inter.ts, cfg.split)
    valid = eval_users(split, "valid", inter.items, inter.ts)
    test = eval_users(split, "test", inter.items, inter.ts)
    if len(test) == 0 or len(valid) == 0:
        raise ValueError(f"no user left to evaluate (validation {len(valid)}, test {len(test)}; dropped "
                         f"{test.dropped}); users need interactions on at least two distinct days/parts")
    valid_histories = [inter.items[p.train] for p in split.parts.values()]
    test_histories = [inter.items[np.concatenate([p.train, p.valid])] for p in split.parts.values()]
    return EvalData(items, inter, split, valid, test, valid_histories, test_histories,
                    popularity(valid_histories, len(ids)), popularity(test_histories, len(ids)))
