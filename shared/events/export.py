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


def _days(timestamps: pa.Array) -> pa.Array:
    """Each timestamp's day (UTC) as ``YYYY-MM-DD``, the partition it is written to."""
    ms = pc.floor(pc.multiply(timestamps, 1000)).cast(pa.int64())  # arrival times have fractions
    return pc.strftime(ms.cast(pa.timestamp("ms")), format="%Y-%m-%d")


def _with_pruned_part(t: pa.Table, out: Path, cut: float | None) -> pa.Table:
    """``t`` with the rows an earlier export archived before the store's prune ``cut``, for
    every day up to the cut's that this export writes: the store holds none of them any more,
    and a day written again from the store alone lost them (the hours of the cut's day before
    it; a whole older day where an event dated then arrived after the prune). Rows before the
    cut that both hold (a prune cut short after its mark, or one running beside the export) are
    kept once. Only rows before the cut: a row after it that the store no longer holds was
    erased, and stays out."""
    if cut is None or not t.num_rows:
        return t
    early = pc.less(t.column("timestamp"), cut - cut % DAY_S + DAY_S)
    written = set(_days(t.filter(early).column("timestamp")).to_pylist())
    folders = [out / f"day={d}" for d in sorted(written) if (out / f"day={d}").is_dir()]
    if not folders:
        return t
    archived = pa.concat_tables([ds.dataset(f, format="parquet").to_table().select(SCHEMA.names).cast(SCHEMA)
                                 for f in folders])
    before = pc.less(t.column("timestamp"), cut)
    both = pa.concat_tables([archived.filter(pc.less(archived.column("timestamp"), cut)), t.filter(before)])
    once = both.group_by(SCHEMA.names, use_threads=False).aggregate([]).select(SCHEMA.names)
    return pa.concat_tables([once, t.filter(pc.invert(before))])


def _erased_days(out: Path, days: list[str], cut: float | None) -> list[str]:
    """Remove the archive's days between the first and the last day written that this export
    wrote none of: the store holds every event of those days but none is left (all erased), so
    the archive must not keep them. Days before or after the written range are left alone, and
    days before the prune's ``cut`` too (the archive is all that is left of them: an event
    dated long ago that arrived after the prune does not make them look erased)."""
    if len(days) < 2:
        return []
    first = max(days[0], _day(cut)) if cut is not None else days[0]
    gone = sorted(p.name.removeprefix("day=") for p in out.glob("day=*")
                  if p.is_dir() and first < p.name.removeprefix("day=") < days[-1]
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
    events = table(store, since)
    cut = store.pruned_before()  # read after the scan: the rows a prune beside it took are archived
    t = _with_pruned_part(events, out, cut)
    day = _days(t.column("timestamp"))
    t = t.append_column("day", day)
    out.mkdir(parents=True, exist_ok=True)
    ds.write_dataset(t, out, format="parquet", partitioning=ds.partitioning(pa.schema([("day", pa.string())]),
                                                                            flavor="hive"),
                     existing_data_behavior="delete_matching", basename_template="events-{i}.parquet")
    days = sorted(set(day.to_pylist()))
    emptied = _erased_days(out, days, cut)
    return {"events": t.num_rows, "days_emptied": emptied, "users": len(set(t.column("user_id").to_pylist())), "days": len(days),
            "first_day": days[0] if days else None, "last_day": days[-1] if days else None, "out": str(out)}
