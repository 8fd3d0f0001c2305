"""Interactions: the user-item table the collaborative model and ``groundrec eval`` read
(user, item, timestamp; columns named in the config), mapped onto catalog rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pydantic import Field, field_validator

from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError
from groundrec.shared.tables import read_table


class InteractionsConfig(StrictModel):
    """A table of user-item interactions (Parquet, CSV or JSONL), columns named here."""

    path: str | None = Field(None, description="a table (Parquet, CSV, JSONL), a folder of Parquet files "
                             "(groundrec events export's), or an event store URL (sqlite:///..., redis://...)")
    user_column: str = "user_id"
    item_column: str = "item_id"
    timestamp_column: str = "timestamp"

    @field_validator("path", mode="before")
    @classmethod
    def _path_to_text(cls, v):
        return str(v) if isinstance(v, Path) else v


@dataclass
class Interactions:
    users: np.ndarray  # user codes
    items: np.ndarray  # catalog rows
    ts: np.ndarray  # seconds
    user_ids: list[str]
    dropped_unknown_items: int


def load_interactions(ic: InteractionsConfig, item_rows: dict[str, int]) -> Interactions:
    """The interactions whose item is in ``item_rows`` (catalog id -> row), users coded 0..U-1,
    timestamps in whole seconds; the count of the others is kept."""
    table = read_table(ic.path)
    missing = [c for c in (ic.user_column, ic.item_column, ic.timestamp_column) if c not in table.column_names]
    if missing:
        raise UserError(f"interactions {ic.path} lack column(s) {missing}; they have {table.column_names}. "
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
            raise UserError(f"interactions column {ic.timestamp_column!r} is neither a timestamp, a number of "
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


def on_published_rows(inter: Interactions, catalog_ids: list, published_ids: list) -> Interactions:
    """``inter`` (rows of the catalog) re-expressed on the rows of the published items; the
    interactions with an item that is not published are dropped and counted."""
    published = {str(i): r for r, i in enumerate(published_ids)}
    to_published = np.array([published.get(str(i), -1) for i in catalog_ids], dtype=np.int64)
    rows = to_published[inter.items] if len(inter.items) else inter.items
    keep = rows >= 0
    return Interactions(inter.users[keep], rows[keep], inter.ts[keep], inter.user_ids,
                        inter.dropped_unknown_items + int((~keep).sum()))
