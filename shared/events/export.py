"""The event log as interactions: Parquet partitioned by day (``day=YYYY-MM-DD/``), the
columns the job and eval read (user_id, item_id, timestamp in seconds) plus type, weight and
event_id. ``table`` gives the same rows in memory (the job reading a store URL directly)."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from groundrec.shared.events.store import Event, EventStore

DAY_S = 86_400
SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.float64()),
                    ("type", pa.string()), ("weight", pa.float64()), ("event_id", pa.string())])


def _batch(events: list[Event]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([getattr(e, f) for e in events], type=SCHEMA.field(f).type) for f in
         ("user_id", "item_id", "timestamp", "type", "weight", "event_id")], schema=SCHEMA)


def table(store: EventStore, since: float | None = None) -> pa.Table:
    """Every event at or after ``since`` as one table (the interactions format)."""
    return pa.Table.from_batches([_batch(b) for b in store.scan(since)], schema=SCHEMA)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts - ts % DAY_S, timezone.utc).strftime("%Y-%m-%d")


def _with_pruned_part(t: pa.Table, out: Path, cut: float | None) -> pa.Table:
    """``t`` with the rows an earlier export archived of the day of the store's prune ``cut``
    before it: a prune cuts the log inside a day (now - keep_days), and that day written again
    from the store alone lost the hours the prune took. Only rows before the cut: a row after
    it that the store no longer holds was erased, and stays out."""
    if cut is None or not t.num_rows:
        return t
    folder = out / f"day={_day(cut)}"
    day_start = cut - cut % DAY_S
    rewritten = pc.any(pc.less(t.column("timestamp"), day_start + DAY_S)).as_py()  # the export writes that day
    if not folder.is_dir() or not rewritten:
        return t
    archived = ds.dataset(folder, format="parquet").to_table().select(SCHEMA.names).cast(SCHEMA)
    older = archived.filter(pc.less(archived.column("timestamp"), cut))
    return pa.concat_tables([older, t]) if older.num_rows else t


def _erased_days(out: Path, days: list[str]) -> list[str]:
    """Remove the archive's days between the first and the last day written that this export
    wrote none of: the store holds every event of those days but none is left (all erased), so
    the archive must not keep them. Days before or after the written range are left alone."""
    if len(days) < 2:
        return []
    gone = sorted(p.name.removeprefix("day=") for p in out.glob("day=*")
                  if p.is_dir() and days[0] < p.name.removeprefix("day=") < days[-1]
                  and p.name.removeprefix("day=") not in set(days))
    for name in gone:
        shutil.rmtree(out / f"day={name}")
    return gone


def export(store: EventStore, out: str | Path, since: float | None = None) -> dict:
    """Write the events as Parquet under ``out``, one folder per day (UTC) of their timestamp;
    a day written again is replaced whole (``delete_matching``), so a re-export is idempotent
    (and drops what was erased since), except the hours of the prune's day before its cut
    (``pruned_before``), kept as archived; ``since`` is taken back to the start of its
    day, so no day is ever written in part.
    Returns the counts."""
    if since is not None:
        since -= since % DAY_S
    out = Path(out)
    t = _with_pruned_part(table(store, since), out, store.pruned_before())
    ms = pc.floor(pc.multiply(t.column("timestamp"), 1000)).cast(pa.int64())  # arrival times have fractions
    day = pc.strftime(ms.cast(pa.timestamp("ms")), format="%Y-%m-%d")
    t = t.append_column("day", day)
    out.mkdir(parents=True, exist_ok=True)
    ds.write_dataset(t, out, format="parquet", partitioning=ds.partitioning(pa.schema([("day", pa.string())]),
                                                                            flavor="hive"),
                     existing_data_behavior="delete_matching", basename_template="events-{i}.parquet")
    days = sorted(set(day.to_pylist()))
    emptied = _erased_days(out, days)
    return {"events": t.num_rows, "days_emptied": emptied, "users": len(set(t.column("user_id").to_pylist())), "days": len(days),
            "first_day": days[0] if days else None, "last_day": days[-1] if days else None, "out": str(out)}
