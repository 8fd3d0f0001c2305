"""The event log as interactions: Parquet partitioned by day (``day=YYYY-MM-DD/``), the
columns the job and eval read (user_id, item_id, timestamp in seconds) plus type, weight and
event_id. ``table`` gives the same rows in memory (the job reading a store URL directly)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from groundrec.shared.events.store import Event, EventStore, user_key

DAY_S = 86_400
SCRUBBED = "_erasures.json"  # in the archive: the latest erasure whose user every archived day is scrubbed of
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
    kept = archived.filter(pc.less(archived.column("timestamp"), cut))
    return pa.concat_tables([kept, _beyond(t.filter(before), kept), t.filter(pc.invert(before))])


def _beyond(rows: pa.Table, held: pa.Table) -> pa.Table:
    """The ``rows`` beyond the copies ``held`` has of each (the store's rows before the cut that
    the archive does not hold as often): two identical events without an id (one request's two
    purchases) stay two, and a row both hold is written once."""
    if not rows.num_rows:
        return rows
    have = Counter(zip(*(held.column(c).to_pylist() for c in SCHEMA.names)))
    extra = []
    for n, row in enumerate(zip(*(rows.column(c).to_pylist() for c in SCHEMA.names))):
        if have[row]:
            have[row] -= 1  # one of the archive's copies
        else:
            extra.append(n)
    return rows.take(pa.array(extra, pa.int64()))


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


def without_erased(t: pa.Table, erasures: dict[str, float]) -> pa.Table:
    """``t`` without the events of an erased user (``EventStore.erasures``: by ``user_key``)
    dated up to the erasure's time (a user may come back: their later events stay)."""
    if not erasures or not t.num_rows:
        return t
    at = {u: erasures[k] for u in pc.unique(t.column("user_id")).to_pylist()
          if u is not None and (k := user_key(u)) in erasures}
    if not at:
        return t
    found = pc.index_in(t.column("user_id"), value_set=pa.array(list(at), pa.string()))
    where = found.to_numpy(zero_copy_only=False)  # a float array, NaN where the user was not erased
    limit = np.full(len(where), -np.inf)
    hit = ~np.isnan(where)
    limit[hit] = np.asarray(list(at.values()))[where[hit].astype(np.int64)]
    return t.filter(pa.array(t.column("timestamp").to_numpy() > limit))


def _scrub(out: Path, written: set[str], erasures: dict[str, float]) -> list[str]:
    """The archived days this export did not write (pruned from the store, or outside
    ``since``) rewritten without the users erased since the last scrub (``SCRUBBED``), a day
    left empty removed: the job reads the whole archive, so an erased user stayed in its
    training. The days changed."""
    marker = out / SCRUBBED
    done = json.loads(marker.read_text()).get("erasures", {}) if marker.is_file() else {}
    new = {k: at for k, at in erasures.items() if done.get(k, float("-inf")) < at}  # any host's clock
    if not new:
        return []
    changed = []
    for folder in sorted(out.glob("day=*")):
        day = folder.name.removeprefix("day=")
        if day in written or not folder.is_dir():
            continue
        users = ds.dataset(folder, format="parquet").to_table(columns=["user_id", "timestamp"])
        if without_erased(users, new).num_rows == users.num_rows:
            continue
        kept = without_erased(ds.dataset(folder, format="parquet").to_table().select(SCHEMA.names).cast(SCHEMA), new)
        _replace_day(folder, kept)
        changed.append(day)
    tmp = out / f".{SCRUBBED}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"erasures": {**done, **new}}))
    os.replace(tmp, marker)
    return changed


def _replace_day(folder: Path, rows: pa.Table) -> None:
    """An archived day replaced by ``rows`` (none: removed) without a moment where a crash or
    a full disk loses it: written beside it (a hidden folder the readers skip), then swapped
    in; ``_restore_days`` puts back a day a crash left moved aside."""
    fresh, old = folder.parent / f".{folder.name}.new", folder.parent / f".{folder.name}.old"
    shutil.rmtree(fresh, ignore_errors=True)
    if rows.num_rows:
        ds.write_dataset(rows, fresh, format="parquet", basename_template="events-{i}.parquet")
    os.replace(folder, old)
    if rows.num_rows:
        os.replace(fresh, folder)
    shutil.rmtree(old)


def _restore_days(out: Path) -> None:
    """A day ``_replace_day`` moved aside and a crash left there: its new rows when they were
    written whole, else its old ones."""
    for old in out.glob(".day=*.old"):
        folder = out / old.name[1:-len(".old")]
        fresh = out / f".{folder.name}.new"
        if not folder.exists():
            os.replace(fresh if fresh.is_dir() else old, folder)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(fresh, ignore_errors=True)
    for fresh in out.glob(".day=*.new"):  # a crash while it was written: the day itself is untouched
        shutil.rmtree(fresh, ignore_errors=True)


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
    _restore_days(out)
    erasures = store.erasures()  # before the scan: an erasure beside it is scrubbed next time
    events = table(store, since)
    cut = store.pruned_before()  # read after the scan: the rows a prune beside it took are archived
    t = without_erased(_with_pruned_part(events, out, cut), erasures)
    day = _days(t.column("timestamp"))
    t = t.append_column("day", day)
    out.mkdir(parents=True, exist_ok=True)
    ds.write_dataset(t, out, format="parquet", partitioning=ds.partitioning(pa.schema([("day", pa.string())]),
                                                                            flavor="hive"),
                     existing_data_behavior="delete_matching", basename_template="events-{i}.parquet")
    days = sorted(set(day.to_pylist()))
    emptied = _erased_days(out, days, cut)
    scrubbed = _scrub(out, set(days), erasures)
    return {"events": t.num_rows, "days_emptied": emptied, "days_scrubbed": scrubbed, "users": len(set(t.column("user_id").to_pylist())), "days": len(days),
            "first_day": days[0] if days else None, "last_day": days[-1] if days else None, "out": str(out)}
