"""The event log as interactions: Parquet partitioned by day (``day=YYYY-MM-DD/``), the
columns the job and eval read (user_id, item_id, timestamp in seconds) plus type, weight and
event_id. ``table`` gives the same rows in memory (the job reading a store URL directly)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from groundrec.shared.events.store import Event, EventStore, user_key

log = logging.getLogger("groundrec.events")
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


def _days(timestamps: pa.Array) -> pa.Array:
    """Each timestamp's day (UTC) as ``YYYY-MM-DD``, the partition it is written to."""
    ms = pc.floor(pc.multiply(timestamps, 1000)).cast(pa.int64())  # arrival times have fractions
    return pc.strftime(ms.cast(pa.timestamp("ms")), format="%Y-%m-%d")


def _union(archived: pa.Table | None, rows: pa.Table) -> pa.Table:
    """One day's rows: each distinct row as many times as the side holding more copies of it
    holds it (the archive or the store). A row both hold is written once; two identical events
    without an id (one request's two purchases) stay two; a row only the archive holds stays:
    a prune took it, or the store was restored from a backup older than the archive, or lost
    and started afresh. Only an erasure takes a row out (``without_erased``, after)."""
    if archived is None or not archived.num_rows:
        return rows
    side = lambda t, v: t.append_column("_store", pa.array(np.full(t.num_rows, v, np.int64)))  # noqa: E731
    grouped = pa.concat_tables([side(archived, 0), side(rows, 1)]).group_by(
        SCHEMA.names, use_threads=False).aggregate([("_store", "sum"), ("_store", "count")])
    in_store = grouped.column("_store_sum").to_numpy()
    copies = np.maximum(in_store, grouped.column("_store_count").to_numpy() - in_store)
    return grouped.select(SCHEMA.names).take(pa.array(np.repeat(np.arange(grouped.num_rows), copies))).cast(SCHEMA)


def _by_day(t: pa.Table):
    """(day, its rows) for each day (UTC) of ``t``'s timestamps, in order."""
    if not t.num_rows:
        return
    codes = pc.dictionary_encode(_days(t.column("timestamp"))).combine_chunks()
    names = codes.dictionary.to_pylist()
    index = codes.indices.to_numpy()
    order = np.argsort(index, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=len(names)))])
    for code in sorted(range(len(names)), key=names.__getitem__):
        yield names[code], t.take(pa.array(order[bounds[code]:bounds[code + 1]]))


def _archived(folder: Path, set_aside: list[str]) -> pa.Table | None:
    """An archived day's rows; None when there is none, or when it cannot be read as the export
    wrote it (empty, a file cut short by a crash of an older export, another table put there):
    then it is moved aside as ``.day=...unreadable-<id>`` (hidden: readers skip it; named in the
    report's ``days_set_aside`` to look at), logged, and the day written from the store."""
    if not folder.is_dir():
        return None
    try:
        return ds.dataset(folder, format="parquet").to_table().select(SCHEMA.names).cast(SCHEMA)
    except UNREADABLE as e:
        _set_aside(folder, e, set_aside)
        return None


UNREADABLE = (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError, OSError)


def _set_aside(folder: Path, error: Exception, set_aside: list[str]) -> None:
    aside = folder.parent / f".{folder.name}.unreadable-{uuid.uuid4().hex[:8]}"
    os.replace(folder, aside)
    log.warning("archived day %s cannot be read (%s: %s): moved aside as %s", folder.name, type(error).__name__,
                error, aside.name)
    set_aside.append(aside.name)


def _scrubbed_erasures(out: Path) -> dict[str, float]:
    """The erasures the archive has been scrubbed of (``SCRUBBED``)."""
    marker = out / SCRUBBED
    return json.loads(marker.read_text()).get("erasures", {}) if marker.is_file() else {}


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


def _scrub(out: Path, written: set[str], erasures: dict[str, float], set_aside: list[str]) -> list[str]:
    """The archived days this export did not write (pruned from the store, or outside
    ``since``) rewritten without the users erased since the last scrub (``SCRUBBED``), a day
    left empty removed: the job reads the whole archive, so an erased user stayed in its
    training. The days changed."""
    marker, done = out / SCRUBBED, _scrubbed_erasures(out)
    new = {k: at for k, at in erasures.items() if done.get(k, float("-inf")) < at}  # any host's clock
    if not new:
        return []
    changed = []
    for folder in sorted(out.glob("day=*")):
        day = folder.name.removeprefix("day=")
        if day in written or not folder.is_dir():
            continue
        try:
            users = ds.dataset(folder, format="parquet").to_table(columns=["user_id", "timestamp"])
        except UNREADABLE as e:  # nothing of it can be scrubbed: out of the archive's readers' sight
            _set_aside(folder, e, set_aside)
            continue
        if without_erased(users, new).num_rows == users.num_rows:
            continue
        rows = _archived(folder, set_aside)
        if rows is None:
            continue
        kept = without_erased(rows, new)
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
    if folder.exists():
        os.replace(folder, old)
    if rows.num_rows:
        os.replace(fresh, folder)
    shutil.rmtree(old, ignore_errors=True)


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
    """Write the events as Parquet under ``out``, one folder per day (UTC) of their timestamp.
    A day written again is the union of what the archive and the store hold of it (``_union``:
    a re-export is idempotent, and the archive never loses a row a prune took or a store
    restored from an older backup lacks), less the erased users' events; each day is written
    beside the old one and swapped in (``_replace_day``: a crash loses no day). ``since`` is
    taken back to the start of its day, so no day is ever written in part. The erasures applied
    are the store's and those the archive was scrubbed of (a restored store's may be older).
    Returns the counts."""
    if since is not None:
        since -= since % DAY_S
    out = Path(out)
    _restore_days(out)
    events = table(store, since)
    erasures = store.erasures()  # after the scan: a user erased beside it leaves the archive's rows too
    for key, at in _scrubbed_erasures(out).items():
        erasures[key] = max(at, erasures.get(key, float("-inf")))
    out.mkdir(parents=True, exist_ok=True)
    days, rows, users, set_aside = [], 0, set(), []
    for day, part in _by_day(events):
        kept = without_erased(_union(_archived(out / f"day={day}", set_aside), part), erasures).sort_by("timestamp")
        _replace_day(out / f"day={day}", kept)
        days.append(day)
        rows += kept.num_rows
        users.update(kept.column("user_id").to_pylist())
    scrubbed = _scrub(out, set(days), erasures, set_aside)
    return {"events": rows, "days_scrubbed": scrubbed, "days_set_aside": set_aside, "users": len(users), "days": len(days),
            "first_day": days[0] if days else None, "last_day": days[-1] if days else None, "out": str(out)}
