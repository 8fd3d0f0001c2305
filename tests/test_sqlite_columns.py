"""The SQLite store's column scans (shared/events/sqlite_columns.py): every chunking of every
range gives the tables of the plain per-row query, on the fast path (columns concatenated by
SQLite) and where a chunk must be read row by row (a separator inside a value, timestamps
below 1 s or beyond 2**62)."""

import sqlite3

import pyarrow as pa
import pytest

from groundrec.shared.events import Event, Impression, open_store
from groundrec.shared.events import sqlite_columns
from groundrec.shared.events.store import EVENT_COLUMNS, IMPRESSION_COLUMNS, event_table, impression_table

INF = float("inf")


def per_row(path, since, until, named_only=False):
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    named = " AND recommendation_id IS NOT NULL" if named_only else ""
    events = event_table(conn.execute("SELECT user_id, item_id, ts, type, recommendation_id FROM events WHERE ts >= ? "
                                      f"AND ts < ?{named} ORDER BY ts, seq", (since, until)).fetchall())
    bodies = [r[0] for r in conn.execute("SELECT body FROM impressions WHERE ts >= ? AND ts < ? ORDER BY ts, seq",
                                         (since, until))]
    conn.close()
    return events, impression_table(bodies) if bodies else IMPRESSION_COLUMNS.empty_table()


def fill(store, stamps, odd=""):
    """Events and impressions at ``stamps`` (ties included, out of order), some named, some
    with an empty or a non-ASCII id; ``odd`` goes into one user id."""
    events, shown = [], []
    for i, ts in enumerate(stamps):
        rid = [None, f"r{i}", "", "ré✓"][i % 4]
        events.append(Event(f"u{i % 3}{odd if i == 5 else ''}", f"item-{i % 5}é", ts, ["click", "purchase"][i % 2],
                            1.0, f"e{i}", rid))
        shown.append(Impression(f"r{i}", None if i % 4 == 1 else f"u{i % 3}", ts, "v1", (f"a{i}", "b", "c"),
                                "A" if i % 2 else None, ("A", "B", "A") if i % 3 == 0 else None))
    store.add(events)
    store.add_impressions(shown)


@pytest.mark.parametrize("stamps, fast", [
    ([1_760_000_000.25, 1_760_000_000.25, 1_760_000_001.0, 1_760_000_000.125, 1_760_000_002.5, 1_760_000_002.5,
      1_760_000_002.5, 1_760_000_003.75, 1_760_000_001.0, 1_760_000_010.0, 1.5, -3.0625], True),
    ([0.5, 0.0, 0.25, 0.25, 2.0, 1e300, 3.0, 3.0, -0.75], False),  # read row by row: under 1 s, over 2**62
])
def test_every_chunking_of_every_range_reads_the_per_row_tables(tmp_path, stamps, fast, monkeypatch):
    path = tmp_path / "events.db"
    store = open_store(f"sqlite:///{path}")
    fill(store, stamps)
    row_reads = []
    real = sqlite_columns._scan

    def counting(*args):  # the per-row reading is the last argument: count its use
        *rest, from_rows = args
        return real(*rest, lambda got: row_reads.append(len(got)) or from_rows(got))

    monkeypatch.setattr(sqlite_columns, "_scan", counting)
    cuts = sorted(set(stamps)) + [None]
    for since in [None, *cuts[:-1:2]]:
        for until in [None, *cuts[1::3]]:
            if since is not None and until is not None and until <= since:
                continue
            want_events, want_shown = per_row(path, -INF if since is None else since, INF if until is None else until)
            want_named, _ = per_row(path, -INF if since is None else since, INF if until is None else until, True)
            for chunk in (1, 2, 3, 100):
                got = list(store.scan_columns(since, chunk, until=until))
                assert all(0 < t.num_rows <= chunk and t.schema == EVENT_COLUMNS for t in got)
                assert pa.concat_tables([EVENT_COLUMNS.empty_table(), *got]).equals(want_events)
                named = pa.concat_tables([EVENT_COLUMNS.empty_table(), *store.scan_columns(since, chunk, until=until,
                                                                                             named_only=True)])
                assert named.equals(want_named)
                shown = list(store.scan_impression_columns(since, chunk, until=until))
                assert all(0 < t.num_rows <= chunk for t in shown)
                assert pa.concat_tables([IMPRESSION_COLUMNS.empty_table(), *shown]).equals(want_shown)
    assert (not row_reads) == fast
    store.close()


def test_a_value_holding_the_separator_is_read_row_by_row(tmp_path):
    path = tmp_path / "events.db"
    store = open_store(f"sqlite:///{path}")
    fill(store, [1_760_000_000.0 + i for i in range(8)], odd="\x1f")
    want, _ = per_row(path, -INF, INF)
    got = pa.concat_tables(list(store.scan_columns(chunk=3)))
    assert got.equals(want) and "u2\x1f" in got["user_id"].to_pylist()
    store.close()


def test_the_checks_refuse_what_they_cannot_read_exactly():
    ok = (3, b"1,2,3", b"10,10,11", b"0,4,0", b"a\x1fb\x1fc", b"x\x1fy\x1fz", b"t\x1ft\x1ft", b"r", b"2")
    table = sqlite_columns._events(ok)
    assert table["timestamp"].to_pylist() == [10.0, 10.0 + 4 / 2**52, 11.0]
    assert table["recommendation_id"].to_pylist() == [None, "r", None]
    for bad in [(3, b"1,2,3", b"10,10,11", b"0,4,0", b"a\x1fb", *ok[5:]),  # a separator missing (or one too many)
                (3, b"2,1,3", b"10,10,11", b"0,0,0", *ok[4:]),  # ties out of seq order
                (3, b"1,2,3", b"11,10,12", b"0,0,0", *ok[4:]),  # out of time order
                (3, b"1,2,3", b"0,10,11", b"1,0,0", *ok[4:]),  # below 1 s: the fraction is not exact
                (3, b"1,2,3", b"10,10", b"0,0,0", *ok[4:]),  # a number missing
                (3, *ok[1:7], b"r", b"4")]:  # a named row that is not in the chunk
        with pytest.raises(sqlite_columns.Unchecked):
            sqlite_columns._events(bad)
