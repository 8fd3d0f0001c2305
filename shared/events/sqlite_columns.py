"""The SQLite store's column scans (``scan_columns``, ``scan_impression_columns``: what the
online report reads), a chunk of rows at a time with no Python object per row.

A chunk is the next ``chunk`` rows in (ts, seq) order: its bounds are found on the time index
(keyset paging), then one aggregate statement has SQLite concatenate each column of the chunk's
rows into one value (``group_concat`` over a scan of the time index, whose order is (ts,
seq)), which numpy and pyarrow split into columns. Text is joined with a separator (0x1F) that the split counts;
``seq`` and integers come as decimal text; a timestamp comes exactly, as its integral part and
its fractional part times 2**52 (both integers for 1 <= |ts| < 2**62); the impressions' JSON
is joined by newlines and parsed in one call, as before. Each chunk is checked (rows in (ts,
seq) order, one separator fewer than rows, exact timestamps); a chunk that fails a check (a
separator inside a value, a timestamp below 1 s, an unexpected order) is read again row by row
(``fetchall``), so the tables are always those of the plain per-row query. All chunks are read
in one read transaction: one snapshot of the store, as a single statement would see."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from groundrec.shared.events.store import EVENT_COLUMNS, StoreUnavailable, event_table, impression_table

SEP = 0x1F
FRAC = 4503599627370496.0  # 2**52
MIN_SEQ = -(1 << 63)
# Rows from (a, a_seq) on, before (b, b_seq): the index gives the range on ts (one upper bound only,
# else SQLite may range over the wrong one).
BOUNDS = "ts >= :a AND ts <= :b AND (ts > :a OR seq >= :a_seq) AND (ts < :b OR seq < :b_seq){extra}"
# The first row of the next chunk: on the time index alone (a chunk of ``named_only`` holds the
# named among ``chunk`` rows, so that the rows are scanned once).
NEXT = ("SELECT ts, seq FROM {table} WHERE ts >= :a AND ts < :until AND (ts > :a OR seq >= :a_seq) "
        "ORDER BY ts, seq LIMIT 1 OFFSET :chunk")
TS = ("group_concat(seq), group_concat(CAST(ts AS INTEGER)), "
      f"group_concat(CAST((ts - CAST(ts AS INTEGER)) * {FRAC:.1f} AS INTEGER))")
EVENTS = (f"SELECT count(*), {TS}, group_concat(user_id, x'1f'), group_concat(item_id, x'1f'), "
          "group_concat(type, x'1f'), group_concat(recommendation_id, x'1f'), "
          "group_concat(seq) FILTER (WHERE recommendation_id IS NOT NULL) "
          "FROM events INDEXED BY events_by_time WHERE {bounds}")
EVENT_ROWS = "SELECT user_id, item_id, ts, type, recommendation_id FROM events WHERE {bounds} ORDER BY ts, seq"
IMPRESSIONS = (f"SELECT count(*), {TS}, group_concat(body, x'0a') "
               "FROM impressions INDEXED BY impressions_by_time WHERE {bounds}")
IMPRESSION_ROWS = "SELECT body FROM impressions WHERE {bounds} ORDER BY ts, seq"
NAMED = " AND recommendation_id IS NOT NULL"


class Unchecked(Exception):
    """A chunk's concatenated columns did not pass a check: read it row by row."""


def event_columns(connect: Callable[[], sqlite3.Connection], since: float | None, chunk: int,
                  until: float | None, named_only: bool) -> Iterator[pa.Table]:
    """``EVENT_COLUMNS`` tables of the events in [since, until) (naming a recommendation id
    with ``named_only``), ``chunk`` rows each, in (ts, seq) order."""
    extra = NAMED if named_only else ""
    yield from _scan(connect, "events", since, chunk, until, EVENTS.format(bounds=BOUNDS.format(extra=extra)),
                     _events, EVENT_ROWS.format(bounds=BOUNDS.format(extra=extra)), event_table)


def impression_columns(connect: Callable[[], sqlite3.Connection], since: float | None, chunk: int,
                       until: float | None) -> Iterator[pa.Table]:
    """``IMPRESSION_COLUMNS`` tables of the impressions in [since, until), ``chunk`` rows each."""
    rows = IMPRESSION_ROWS.format(bounds=BOUNDS.format(extra=""))
    yield from _scan(connect, "impressions", since, chunk, until, IMPRESSIONS.format(bounds=BOUNDS.format(extra="")),
                     _impressions, rows, lambda got: impression_table([r[0] for r in got]))


def _scan(connect, table: str, since: float | None, chunk: int, until: float | None, sql: str,
          decode: Callable[[tuple], pa.Table], rows_sql: str, from_rows: Callable[[list], pa.Table]) -> Iterator[pa.Table]:
    at = {"a": float("-inf") if since is None else since, "a_seq": MIN_SEQ,
          "until": float("inf") if until is None else until}
    try:
        conn = connect()
    except sqlite3.Error as e:
        raise StoreUnavailable(f"events store: {e}") from None
    try:
        conn.text_factory = bytes  # text as UTF-8 bytes: no str per value, also row by row
        conn.execute("BEGIN")  # one snapshot for all the chunks' statements
        next_sql = NEXT.format(table=table)
        while True:
            following = conn.execute(next_sql, {**at, "chunk": chunk}).fetchone()
            # The last chunk ends before ``until`` (b_seq MIN_SEQ: none at ts == until).
            bounds = {**at, "b": at["until"], "b_seq": MIN_SEQ} if following is None else {
                **at, "b": following[0], "b_seq": following[1]}
            try:
                got = conn.execute(sql, bounds).fetchone()
                out = decode(got) if got[0] else None
            except (Unchecked, sqlite3.DataError):  # e.g. a chunk over SQLite's longest value
                out = from_rows(conn.execute(rows_sql, bounds).fetchall())
            if out is not None and out.num_rows:
                yield out
            if following is None:
                return
            at = {**at, "a": following[0], "a_seq": following[1]}
    except sqlite3.Error as e:
        raise StoreUnavailable(f"events store: {e}") from None
    finally:
        conn.close()


def _ints(text: bytes | None, n: int) -> np.ndarray:
    out = np.fromstring(text or b"", np.int64, sep=",")  # text mode: exact int64, C speed
    if len(out) != n:
        raise Unchecked
    return out


def _order(got: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(seq, ts) of a chunk, checked: exact timestamps, rows in (ts, seq) order."""
    n = got[0]
    seq, whole, frac = _ints(got[1], n), _ints(got[2], n), _ints(got[3], n)
    # Exact when 1 <= |ts| < 2**62: the integral part is ts truncated, the fraction a multiple of 2**-52.
    if not ((whole != 0) & (np.abs(whole) < 1 << 62)).all():
        raise Unchecked
    ts = whole + frac / FRAC
    step = np.diff(ts)
    if not ((step > 0) | ((step == 0) & (np.diff(seq) > 0))).all():
        raise Unchecked
    return seq, ts


def _split(joined: bytes | None, n: int) -> pa.Array:
    """``n`` UTF-8 strings joined by SEP, as a string array."""
    if not n:
        return pa.array([], pa.string())
    raw = np.frombuffer(joined or b"", np.uint8)
    cuts = np.flatnonzero(raw == SEP)
    if len(cuts) != n - 1:  # a value holds the separator
        raise Unchecked
    offsets = np.empty(n + 1, np.int32)  # a chunk's value is under SQLite's 1 GB limit
    offsets[0], offsets[-1] = 0, len(raw) - len(cuts)
    offsets[1:-1] = cuts - np.arange(n - 1)
    data = np.delete(raw, cuts)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]).cast(pa.string())


def _events(got: tuple) -> pa.Table:
    n = got[0]
    seq, ts = _order(got)
    named_seq = _ints(got[8], 0 if got[8] is None else got[8].count(b",") + 1)
    named = np.isin(seq, named_seq)
    if not np.array_equal(seq[named], named_seq):
        raise Unchecked
    place = np.full(n, -1, np.int64)
    place[named] = np.arange(len(named_seq))
    rid = _split(got[7], len(named_seq)).take(pa.array(place, mask=~named))
    return pa.table([_split(got[4], n), _split(got[5], n), pa.array(ts, pa.float64()), _split(got[6], n), rid],
                    schema=EVENT_COLUMNS)  # the cast to string checks the UTF-8, as row by row


def _impressions(got: tuple) -> pa.Table:
    n = got[0]
    _order(got)
    if got[4].count(b"\n") != n - 1:  # one JSON object a line
        raise Unchecked
    table = impression_table([got[4]])
    if table.num_rows != n:
        raise Unchecked
    return table
