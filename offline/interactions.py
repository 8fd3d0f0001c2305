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


LATEST_SECONDS = 1e11  # about the year 5138: a larger "time" is in milliseconds (or finer)


def seconds(column: pa.ChunkedArray, what: str) -> np.ndarray:
    """A time column as whole seconds since the epoch (int64; sub-second parts truncated):
    Arrow timestamps and dates, numbers of seconds, or text holding either (CSV reads every
    column as text): numbers, or ISO 8601 times, naive (UTC) or with a zone (``Z``,
    ``+02:00``). ``UserError`` naming ``what`` for a missing time, one that is not a time,
    or numbers too large to be seconds (milliseconds)."""
    if column.null_count:
        raise UserError(f"{what}: {column.null_count} row(s) have no time; every interaction needs one")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _parsed_times(column, what)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return np.asarray(pc.cast(pc.cast(column, pa.timestamp("s"), safe=False), pa.int64()).to_numpy(), np.int64)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise UserError(f"{what} holds {column.type}: give a timestamp, a number of seconds or an ISO date")
    values = np.asarray(column.to_numpy(), np.float64)
    if not np.isfinite(values).all():
        raise UserError(f"{what}: {int((~np.isfinite(values)).sum())} time(s) are not finite numbers")
    if len(values) and np.abs(values).max() >= LATEST_SECONDS:
        raise UserError(f"{what}: times up to {np.abs(values).max():.4g} are not seconds since the epoch (milliseconds? "
                        "divide them by 1,000)")
    return values.astype(np.int64)


def _parsed_times(column: pa.ChunkedArray, what: str) -> pa.ChunkedArray:
    """Text times as numbers of seconds, else as timestamps (naive ones as UTC)."""
    for kind in (pa.float64(), pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            return pc.cast(column, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    raise UserError(f"{what} is neither a timestamp, a number of seconds nor an ISO date (naive or zoned; one form "
                    f"for every row), e.g. {column[0].as_py()!r}")


class NoInteractions(UserError):
    """The interactions given hold no row at all."""


def load_interactions(ic: InteractionsConfig, item_rows: dict[str, int]) -> Interactions:
    """The interactions whose item is in ``item_rows`` (catalog id -> row), users coded 0..U-1,
    timestamps in whole seconds; the count of the others is kept."""
    table = read_table(ic.path)
    if not table.num_rows:  # e.g. an events export of a store no event reached yet (a folder of no files)
        raise NoInteractions(f"interactions {ic.path} hold no rows (an events export before the first event?)")
    missing = [c for c in (ic.user_column, ic.item_column, ic.timestamp_column) if c not in table.column_names]
    if missing:
        raise UserError(f"interactions {ic.path} lack column(s) {missing}; they have {table.column_names}. "
                         "Set interactions.user_column/item_column/timestamp_column in the config")
    ts = seconds(table.column(ic.timestamp_column), f"interactions {ic.path} column {ic.timestamp_column!r}")
    items = [item_rows.get(i) for i in pc.cast(table.column(ic.item_column), pa.string()).to_pylist()]
    users = pc.cast(table.column(ic.user_column), pa.string()).to_pylist()
    keep = [n for n, i in enumerate(items) if i is not None and users[n] is not None]
    if items and all(u is None for u in users):
        raise UserError(f"interactions {ic.path}: column {ic.user_column!r} holds no user id; set "
                        f"interactions.user_column to the column that names the user")
    if items and len({items[n] for n in keep}) < 2:  # found now, not after the job's hours of grounding
        other = next((n for n, i in enumerate(items) if i is None), None)
        example = "" if other is None else (f", e.g. {table.column(ic.item_column)[other].as_py()!r} is no catalog "
                                            f"id (catalog ids look like {next(iter(item_rows), '')!r})")
        raise UserError(f"interactions {ic.path}: {len(keep)} of {len(items)} rows name an item of the catalog "
                        f"({len({items[n] for n in keep})} distinct; at least 2 are needed){example}; check "
                        f"interactions.item_column ({ic.item_column!r}) and that its ids are written as the "
                        f"catalog's (leading zeros, a number read as text)")
    user_ids = sorted({users[n] for n in keep})
    code = {u: c for c, u in enumerate(user_ids)}
    return Interactions(np.array([code[users[n]] for n in keep], dtype=np.int64),
                        np.array([items[n] for n in keep], dtype=np.int64), ts[keep], user_ids,
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
