"""The event store's contract (shared/events), the same tests for both backends: a SQLite
file and a real redis-server."""

import asyncio
import threading

import pytest

from groundrec.shared.errors import UserError
from groundrec.shared.events import Event, StoreUnavailable, open_store


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/events.db")
    else:
        server = request.getfixturevalue("redis_server")
        server.flush()
        s = open_store(server.url)
    yield s
    s.close()


def ev(user, item, ts, eid=None, weight=1.0, type_="purchase"):
    return Event(user, item, float(ts), type_, weight, eid)


def test_history_is_the_latest_events_oldest_first_by_time(store):
    assert store.add([ev("u1", "a", 30), ev("u1", "b", 10), ev("u2", "x", 5), ev("u1", "c", 20, weight=0.2)]) == 4
    assert store.history("u1", 10) == [("b", 10.0, 1.0), ("c", 20.0, 0.2), ("a", 30.0, 1.0)]
    assert store.history("u1", 2) == [("c", 20.0, 0.2), ("a", 30.0, 1.0)]
    assert store.history("nobody", 5) == []
    assert store.histories(["u2", "nobody", "u1"], 1) == [[("x", 5.0, 1.0)], [], [("a", 30.0, 1.0)]]
    assert asyncio.run(store.ahistories(["u2", "nobody", "u1"], 2)) == store.histories(["u2", "nobody", "u1"], 2)
    assert store.count() == 4


def test_an_item_id_holding_the_redis_members_separator_reads_back_whole(store):
    """The API refuses ids with control characters (online/schemas.py ``Id``); one stored before
    that (or by another writer) still reads back: the history's members split on their ends."""
    assert store.add([ev("u1", "a\x1fb", 1), ev("u1", "c", 2, weight=0.5)]) == 2
    assert store.history("u1", 10) == [("a\x1fb", 1.0, 1.0), ("c", 2.0, 0.5)]


def test_an_event_id_is_stored_once_however_often_it_is_sent(store):
    assert store.add([ev("u1", "a", 1, "e1"), ev("u1", "b", 2, "e2")]) == 2
    assert store.add([ev("u1", "a", 1, "e1"), ev("u1", "c", 3, "e3")]) == 1  # a retry with one new event
    assert store.add([ev("u1", "c", 3, "e3")]) == 0
    assert [i for i, *_ in store.history("u1", 10)] == ["a", "b", "c"] and store.count() == 3


def test_delete_user_erases_events_and_ids_and_nothing_else(store):
    store.add([ev("gone", "a", 1, "g1"), ev("gone", "b", 2), ev("kept", "a", 3, "k1")])
    assert store.delete_user("gone") == 2
    assert store.history("gone", 10) == [] and store.history("kept", 10) == [("a", 3.0, 1.0)]
    assert all(e.user_id != "gone" for batch in store.scan() for e in batch)
    assert store.add([ev("gone", "a", 1, "g1")]) == 0  # dated before the erasure: not the user's data back
    back = max(store.erasures().values()) + 1
    assert store.add([ev("gone", "a", back, "g1")]) == 1  # its ids are forgotten too: a new event, not a retry
    assert store.delete_user("nobody") == 0


def test_scan_and_popularity_over_a_window(store):
    store.add([ev("u1", "a", 10, weight=0.5), ev("u2", "a", 20), ev("u2", "b", 30, "x"), ev("u3", "c", 5)])
    events = [e for batch in store.scan(chunk=2) for e in batch]
    assert sorted((e.user_id, e.item_id, e.timestamp, e.weight) for e in events) == [
        ("u1", "a", 10.0, 0.5), ("u2", "a", 20.0, 1.0), ("u2", "b", 30.0, 1.0), ("u3", "c", 5.0, 1.0)]
    assert next(e for e in events if e.item_id == "b").event_id == "x"
    assert sorted(e.item_id for batch in store.scan(since=20) for e in batch) == ["a", "b"]
    assert store.popularity() == {"a": 1.5, "b": 1.0, "c": 1.0}
    assert store.popularity(since=15) == {"a": 1.0, "b": 1.0}


def test_prune_erases_what_is_older_than_the_retention_and_keeps_the_rest(store):
    store.add([ev("u1", "old", 10, "o1"), ev("u1", "new", 50, "n1"), ev("u2", "old", 20), ev("u2", "late", 5, "l")])
    assert store.prune(before=30) == 3
    assert store.history("u1", 10) == [("new", 50.0, 1.0)] and store.history("u2", 10) == []
    assert [e.item_id for batch in store.scan() for e in batch] == ["new"] and store.count() == 1
    assert store.add([ev("u1", "old", 10, "o1")]) == 1  # a pruned event's id is forgotten with it
    assert store.add([ev("u1", "new", 50, "n1")]) == 0  # a kept one's is not


def test_concurrent_writers_lose_nothing_and_share_commits(store):
    def write(n):
        for j in range(25):
            store.add([ev(f"u{n}", f"i{j}", j, f"{n}-{j}"), ev(f"u{n}", f"k{j}", j)])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 8 * 25 * 2
    assert len(store.history("u3", 1000)) == 50


def test_a_bad_url_is_refused_with_the_forms_that_work(tmp_path):
    with pytest.raises(UserError, match="sqlite:///path/events.db or redis://"):
        open_store("mysql://x")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreUnavailable, match="events store"):
        open_store(f"sqlite:///{tmp_path}/a-file/events.db")  # its folder is a file


def test_an_erased_user_leaves_no_byte_in_the_sqlite_files(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/events.db")
    s.add([ev("erase-me-7f3a", f"item-{n}", n, f"eid-erase-me-{n}") for n in range(200)] + [ev("other", "x", 1)])
    s.history("erase-me-7f3a", 5)
    assert s.delete_user("erase-me-7f3a") == 200
    s.close()
    files = list(tmp_path.glob("events.db*"))
    assert files and not any(b"erase-me" in f.read_bytes() for f in files)


def test_an_unreachable_redis_answers_store_unavailable_then_recovers(redis_server):
    s = open_store(redis_server.url)
    s.add([ev("u", "a", 1)])
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="events store"):
            s.history("u", 5)
        with pytest.raises(StoreUnavailable):
            s.add([ev("u", "b", 2)])
    finally:
        redis_server.start()
    assert s.history("u", 5) == [("a", 1.0, 1.0)]  # appendfsync always: what was acknowledged survived
    s.add([ev("u", "b", 2)])
    assert [i for i, *_ in s.history("u", 5)] == ["a", "b"]


# --- impressions (the lists shown) and attribution ids -------------------------------------
from groundrec.shared.events import Impression  # noqa: E402


def imp(rid, user, ts, items=("a", "b"), arm=None, teams=None):
    return Impression(rid, user, float(ts), "v1", tuple(items), arm, teams, "recommend", '{"k": 2}')


def test_impressions_are_stored_once_and_read_back_whole_in_time_order(store):
    shown = [imp("r1", "u1", 10), imp("r2", "u1", 20, ("c", "a"), arm="B", teams=("B", "A")), imp("r3", None, 30)]
    assert store.add_impressions(shown) == 3
    assert store.add_impressions([imp("r1", "u1", 10), imp("r4", "u2", 40)]) == 1  # r1 again: skipped
    assert store.impression("r2") == shown[1] and store.impression("nope") is None
    scanned = [m for batch in store.scan_impressions(chunk=2) for m in batch]
    assert [m.recommendation_id for m in scanned] == ["r1", "r2", "r3", "r4"]
    assert scanned[1].teams == ("B", "A") and scanned[2].user_id is None
    assert [m.recommendation_id for b in store.scan_impressions(since=25) for m in b] == ["r3", "r4"]


def test_an_event_keeps_the_recommendation_id_it_was_sent_with(store):
    store.add([Event("u1", "a", 5.0, "click", 1.0, "e1", "r1"), ev("u1", "b", 6)])
    events = [e for batch in store.scan() for e in batch]
    assert [(e.item_id, e.recommendation_id) for e in events] == [("a", "r1"), ("b", None)]


def test_erasing_a_user_erases_their_impressions_and_pruning_old_ones_keeps_the_rest(store):
    store.add_impressions([imp("r1", "gone", 10), imp("r2", "kept", 11), imp("r3", "gone", 12), imp("r4", None, 1)])
    store.add([ev("gone", "a", 10)])
    store.delete_user("gone")
    assert store.impression("r1") is None and store.impression("r3") is None and store.impression("r2") is not None
    assert store.prune_impressions(before=5) == 1  # r4
    assert [m.recommendation_id for b in store.scan_impressions() for m in b] == ["r2"]
    assert store.add_impressions([imp("r1", "gone", 13)]) == 0  # dated before the erasure
    assert store.add_impressions([imp("r1", "gone", max(store.erasures().values()) + 1)]) == 1  # an erased id is forgotten


def test_sqlite_commits_impressions_alone_without_fsync_and_events_and_erasures_with_it(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/ev.db")
    synchronous = lambda: store._writer.execute("PRAGMA synchronous").fetchone()[0]  # noqa: E731 (1 NORMAL, 2 FULL)
    store.add_impressions([imp("r1", "u1", 10)])
    assert synchronous() == 1  # best effort: survives a killed process, a power loss may take it
    store.add([ev("u1", "a", 11)])
    assert synchronous() == 2  # an acknowledged event survives a power loss
    store.add_impressions([imp("r2", "u1", 12)])
    store.delete_user("u1")
    assert synchronous() == 2 and store.impression("r2") is None


def test_one_chunked_prune_script_serves_events_and_impressions():
    from groundrec.shared.events import redis_impressions, redis_store
    from groundrec.shared.events.redis_lua import chunk_prune

    script = chunk_prune("s", "    redis.call('DEL', 'x')")
    assert "XRANGE', p .. 's'" in script and "XDEL', p .. 's'" in script and "redis.call('DEL', 'x')" in script
    assert "p .. 'log'" in redis_store.PRUNE and "p .. 'ilog'" in redis_impressions.PRUNE


def test_a_store_written_by_the_code_before_impressions_opens_migrated_in_place(tmp_path):
    """The events table as the previous release created it (no recommendation_id column, no
    impressions table): opening it adds both and keeps every event."""
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, user_id TEXT NOT NULL,
            item_id TEXT NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL, weight REAL NOT NULL);
        CREATE INDEX events_by_user ON events (user_id, ts);
        CREATE INDEX events_by_time ON events (ts);
        INSERT INTO events (event_id, user_id, item_id, ts, type, weight) VALUES ('e1', 'u1', 'a', 1.0, 'view', 1.0);
    """)
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        assert [(e.event_id, e.recommendation_id) for b in store.scan() for e in b] == [("e1", None)]
        assert store.add([Event("u1", "b", 2.0, "click", 1.0, "e2", "r9")]) == 1
        assert store.add_impressions([imp("r9", "u1", 1.5)]) == 1
        assert store.history("u1", 5) == [("a", 1.0, 1.0), ("b", 2.0, 1.0)]
    finally:
        store.close()
    reopened = open_store(f"sqlite:///{path}")  # migrating twice is a no-op
    assert reopened.impression("r9").user_id == "u1"
    reopened.close()


def test_a_store_with_the_impressions_by_user_index_drops_it_and_still_erases_a_users_lists(tmp_path):
    """The impressions table as the release before time-ordered ids created it (AUTOINCREMENT,
    an index by user): opened, the index is gone (its random inserts cost more than the rest),
    its rows are kept, and erasing a user still removes their lists."""
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE impressions (seq INTEGER PRIMARY KEY AUTOINCREMENT, recommendation_id TEXT NOT NULL UNIQUE,
            user_id TEXT, ts REAL NOT NULL, body TEXT NOT NULL);
        CREATE INDEX impressions_by_user ON impressions (user_id);
        CREATE INDEX impressions_by_time ON impressions (ts);
    """)
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.add_impressions([imp("r1", "u1", 1), imp("r2", "u2", 2), imp("r3", "u1", 3)]) == 3
        indexes = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "impressions_by_user" not in indexes and "impressions_by_time" in indexes
        store.delete_user("u1")
        assert [m.recommendation_id for b in store.scan_impressions() for m in b] == ["r2"]
    finally:
        store.close()


def test_the_column_scans_read_what_the_object_scans_read(store):
    """``scan_columns`` / ``scan_impression_columns`` (what the online report reads): the same
    rows as ``scan`` / ``scan_impressions``, with ``until`` and ``named_only``; ``time_span``."""
    import pyarrow as pa

    from groundrec.shared.events.store import Event

    store.add([Event("u1", "a", 10.5, "click", 1.0, "e1", "r1"), Event("u2", "b", 20.25, "purchase", 2.0, "e2"),
               Event("u1", "é", 30.0, "click", 1.0, "e3", "r2")])
    store.add_impressions([imp("r1", "u1", 10), imp("r2", None, 20, ("c", "a"), arm="B", teams=("B", "A"))])
    rows = pa.concat_tables(list(store.scan_columns(chunk=2))).to_pylist()
    assert [(r["user_id"], r["item_id"], r["timestamp"], r["type"], r["recommendation_id"]) for r in rows] == [
        (e.user_id, e.item_id, e.timestamp, e.type, e.recommendation_id) for b in store.scan() for e in b]
    assert [r["item_id"] for t in store.scan_columns(since=15, until=30) for r in t.to_pylist()] == ["b"]
    assert [r["recommendation_id"] for t in store.scan_columns(named_only=True) for r in t.to_pylist()] == ["r1", "r2"]
    assert store.time_span() == (10.5, 30.0) and store.time_span(since=40) is None
    shown = pa.concat_tables(list(store.scan_impression_columns(chunk=1))).to_pylist()
    assert [(m["recommendation_id"], m["user_id"], m["timestamp"], m["items"], m["arm"], m["teams"]) for m in shown] == [
        (m.recommendation_id, m.user_id, m.timestamp, list(m.items), m.arm, list(m.teams) if m.teams else None)
        for b in store.scan_impressions() for m in b]
    assert [m["recommendation_id"] for t in store.scan_impression_columns(until=15) for m in t.to_pylist()] == ["r1"]


# --- the live catalog's change log (the items API's puts, patches, deletes) -----------------
from groundrec.shared.events import ItemChange  # noqa: E402


def chg(item, op="put", ts=1.0, fields='{"title": "x"}', seq=0):
    return ItemChange(item, op, fields, float(ts), seq)


def test_item_changes_read_back_in_commit_order_with_increasing_seq_apart_from_the_events(store):
    sent = [chg("a", ts=10.25, fields='{"title": "Café ✓", "price": 9.99}'), chg("a", "patch", 11, '{"price": 5}'),
            chg("b", "delete", 12, "{}", seq=99), chg("a", ts=10.25, fields='{"title": "Café ✓", "price": 9.99}')]
    assert store.add_item_changes(sent) == 4 and store.add_item_changes([]) == 0
    got = store.item_changes()
    assert [(c.item_id, c.op, c.fields, c.timestamp) for c in got] == [
        (c.item_id, c.op, c.fields, c.timestamp) for c in sent]  # the same change twice is stored twice
    seqs = [c.seq for c in got]
    assert seqs[0] > 0 and seqs == sorted(set(seqs)) and 99 not in seqs  # the store assigns seq
    assert store.add_item_changes([chg("c", ts=13)]) == 1
    assert [(c.item_id, c.seq > seqs[-1]) for c in store.item_changes(after=seqs[-1])] == [("c", True)]
    # A log of its own: no event, nothing exported, untouched by the events' erasure and retention.
    assert store.count() == 0 and list(store.scan()) == [] and store.time_span() is None
    store.delete_user("a")
    store.prune(before=float("inf"))
    store.prune_impressions(before=float("inf"))
    assert len(store.item_changes()) == 5


def test_item_changes_page_by_after_and_limit_and_prune_keeps_the_rest(store):
    store.add_item_changes([chg(f"i{n}", ts=n) for n in range(7)])
    pages, cursor = [], 0
    while page := store.item_changes(after=cursor, limit=3):
        pages.append([c.item_id for c in page])
        cursor = page[-1].seq
    assert pages == [["i0", "i1", "i2"], ["i3", "i4", "i5"], ["i6"]]
    assert store.item_changes(after=cursor) == [] and store.item_changes(limit=0) == []
    every = store.item_changes()
    assert store.prune_item_changes(through=every[2].seq) == 3
    assert store.item_changes() == every[3:]  # the rest kept, with their seq
    assert store.item_changes(after=0, limit=1) == every[3:4]
    assert store.prune_item_changes(through=every[2].seq) == 0
    assert store.prune_item_changes(through=every[-1].seq) == 4 and store.item_changes() == []
    store.add_item_changes([chg("late")])
    assert store.item_changes()[0].seq > every[-1].seq  # a pruned seq is never handed out again


def test_concurrent_item_change_writers_lose_nothing_and_a_poller_misses_nothing(store):
    """Eight writers on two store objects (as two processes would), and a reader polling what
    is new by ``after``, as the servers do: the seqs are unique and increase in each writer's
    order, and the poller, which never reads a seq twice, ends up with every change."""
    second = open_store(store.url)
    done, polled = threading.Event(), []

    def write(n):
        s = store if n % 2 else second
        for j in range(20):
            s.add_item_changes([chg(f"w{n}-{j}-0", ts=j), chg(f"w{n}-{j}-1", "patch", j, '{"n": 1}')])

    def poll():
        cursor = 0
        while True:
            last_round = done.is_set()
            while page := store.item_changes(after=cursor, limit=7):
                polled.extend(page)
                cursor = page[-1].seq
            if last_round:
                return

    writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    poller = threading.Thread(target=poll)
    try:
        poller.start()
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        done.set()
        poller.join()
    finally:
        second.close()
    every = store.item_changes(limit=100_000)
    assert len(every) == 8 * 20 * 2
    seqs = [c.seq for c in every]
    assert seqs == sorted(set(seqs))
    for n in range(8):
        assert [c.item_id for c in every if c.item_id.startswith(f"w{n}-")] == [
            f"w{n}-{j}-{k}" for j in range(20) for k in range(2)]
    assert [c.seq for c in polled] == seqs


def test_redis_item_changes_and_their_counter_survive_a_killed_server(redis_server):
    import redis

    redis_server.flush()
    s = open_store(redis_server.url)
    try:
        s.add_item_changes([chg("a"), chg("b", "delete", 2, "{}")])
        before = s.item_changes()
        redis_server.stop(hard=True)  # kill -9: appendfsync always kept what was acknowledged
        redis_server.start()
        assert s.item_changes() == before
        s.add_item_changes([chg("c")])
        assert s.item_changes(after=before[-1].seq)[0].seq == before[-1].seq + 1
        keys = {k.decode() for k in redis.Redis.from_url(redis_server.url).keys("*")}
        assert keys == {"groundrec:items:log", "groundrec:items:seq"}
        from groundrec.shared.events.redis_store import RedisStore

        other = RedisStore(redis_server.url, prefix="other:")  # keys under the store's prefix
        assert other.item_changes() == [] and other.prune_item_changes(10**9) == 0
        other.close()
        assert len(s.item_changes()) == 3
    finally:
        s.close()


def test_a_store_written_before_item_changes_opens_migrated_in_place(tmp_path):
    """A file with the previous release's tables (events, impressions) and no item_changes:
    opening it creates the table and keeps the events; opening it again is a no-op."""
    import sqlite3

    from groundrec.shared.events import sqlite as sqlite_store

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(sqlite_store.SCHEMA + "INSERT INTO events (event_id, user_id, item_id, ts, type, weight) "
                       "VALUES ('e1', 'u1', 'a', 1.0, 'view', 1.0);")
    conn.commit()
    assert "item_changes" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.item_changes() == []
        assert store.add_item_changes([chg("a", ts=5), chg("a", "delete", 6, "{}")]) == 2
        assert store.history("u1", 5) == [("a", 1.0, 1.0)]
    finally:
        store.close()
    reopened = open_store(f"sqlite:///{path}")
    try:
        assert [(c.item_id, c.op, c.seq) for c in reopened.item_changes()] == [("a", "put", 1), ("a", "delete", 2)]
    finally:
        reopened.close()


def test_item_vectors_are_read_back_by_version_item_and_seq_and_pruned_with_the_changes(store):
    import numpy as np

    a, b = np.arange(4, dtype=np.float32), -np.ones(4, dtype=np.float32)
    assert store.add_item_vectors("v1/fp32", [("a", 3, a.tobytes()), ("b", 5, b.tobytes())]) == 2
    assert store.add_item_vectors("v1/fp32", []) == 0
    store.add_item_vectors("v2/fp32", [("a", 3, b.tobytes())])
    got = store.item_vectors("v1/fp32", [("a", 3), ("b", 5), ("b", 4), ("c", 1)])
    assert set(got) == {("a", 3), ("b", 5)}  # another state of b, an item never cached: absent
    assert np.array_equal(np.frombuffer(got["a", 3], np.float32), a)
    assert np.array_equal(np.frombuffer(store.item_vectors("v2/fp32", [("a", 3)])["a", 3], np.float32), b)
    assert store.item_vectors("v1/int8", [("a", 3)]) == {} and store.item_vectors("v1/fp32", []) == {}
    store.add_item_vectors("v1/fp32", [("a", 3, b.tobytes())])  # the same key again: replaced
    assert np.array_equal(np.frombuffer(store.item_vectors("v1/fp32", [("a", 3)])["a", 3], np.float32), b)
    store.add_item_changes([chg(f"i{n}") for n in range(4)])  # seqs 1-4
    store.prune_item_changes(through=4)  # a version absorbed every state up to seq 4
    assert store.item_vectors("v1/fp32", [("a", 3), ("b", 5)]).keys() == {("b", 5)}
    assert store.item_vectors("v2/fp32", [("a", 3)]) == {}
    if hasattr(store, "_writer"):  # SQLite: a cache, committed without fsync
        store.add_item_vectors("v1/fp32", [("c", 9, a.tobytes())])
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_an_export_after_a_prune_inside_a_day_keeps_that_day_s_archived_hours(store, tmp_path):
    """The nightly export rewrites each day from the store; a prune cuts the log inside a day,
    and that day's archive lost the hours the prune took. Erased events still leave it."""
    import pyarrow.dataset as ds

    from groundrec.shared.events.export import export

    day = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    store.add([ev(f"u{h % 3}", f"i{h}", day + 3600 * h, eid=f"e{h}") for h in range(24)]
              + [ev("u1", "late", day + 86_400 + 60, eid="late")])
    out = tmp_path / "archive"
    assert export(store, out)["events"] == 25
    store.prune(day + 3 * 3600 + 1)  # the retention's cut, inside the first day
    store.delete_user("u2")  # erased: gone from the archive at the next export
    export(store, out)
    archived = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    first = archived.filter(ds.field("day") == "2026-01-01")
    kept = {h for h in range(24) if h % 3 != 2}  # the pruned hours stay archived, the erased user's go (all)
    assert sorted(first.column("item_id").to_pylist()) == sorted(f"i{h}" for h in kept)
    assert archived.num_rows == len(kept) + 1
    store.delete_user("u0")  # the earliest events the store holds now (hour 6 on): erased, not pruned
    export(store, out)
    left = ds.dataset(out, format="parquet", partitioning="hive").to_table().column("item_id").to_pylist()
    assert "i6" not in left and "i9" not in left and "i0" not in left and "late" in left  # before the cut: scrubbed
    store.add([ev("u9", "day3", day + 2 * 86_400 + 60, eid="d3"), ev("u8", "day4", day + 3 * 86_400 + 60, eid="d4")])
    export(store, out)
    store.delete_user("u9")  # every event of 2026-01-03 erased: the day is gone from the archive too
    report = export(store, out)
    assert report["days_scrubbed"] == ["2026-01-03"] and not (out / "day=2026-01-03").exists()
    assert (out / "day=2026-01-04").is_dir() and (out / "day=2026-01-02").is_dir()


def test_a_group_commit_failing_on_a_row_sqlite_cannot_bind_stores_nothing_and_tells_every_writer(tmp_path):
    """Only sqlite3 errors were caught: another (a lone surrogate cannot be encoded) left the
    transaction open holding the lock, the batch's other writers were told their rows were
    stored, and the next write rolled them back."""
    import sqlite3

    from groundrec.shared.events.sqlite import INSERT, _Ticket

    s = open_store(f"sqlite:///{tmp_path}/events.db")
    try:
        waiting = _Ticket(INSERT, [("e1", "alice", "a", 1.0, "view", 1.0, None, "alice-key", 1.0)])
        s._pending.append(waiting)  # another thread's rows, in the same group commit
        with pytest.raises(StoreUnavailable):
            s.add([ev("bob\ud800", "b", 2.0, eid="e2")])
        assert waiting.done and waiting.error is not None and waiting.stored == 0
        assert not s._writer.in_transaction
        other = sqlite3.connect(tmp_path / "events.db", timeout=0.5)
        other.execute("BEGIN IMMEDIATE")  # the write lock is free
        other.execute("ROLLBACK")
        other.close()
        assert s.add([ev("carol", "c", 3.0, eid="e3")]) == 1 and s.count() == 1
    finally:
        s.close()


def test_an_erasure_beside_a_long_reader_does_not_hold_the_writers_and_scrubs_the_wal_once_it_ends(tmp_path):
    """The checkpoint after an erasure waited out the busy timeout (10 s) holding the write
    lock while an export read, then left the erased rows in the WAL without a word."""
    import time

    from groundrec.shared.events.sqlite_schema import scrub_wal  # noqa: F401  (what runs after the erasure)

    s = open_store(f"sqlite:///{tmp_path}/events.db")
    reader = open_store(f"sqlite:///{tmp_path}/events.db")
    try:
        s.add([ev(f"u{n % 5}", f"i{n}", n, f"e{n}") for n in range(100)] + [ev("erase-me-9c", "x", 1, "e-x")])
        scan = reader.scan(chunk=10)
        next(scan)  # an export in the middle of its read: its snapshot stays open
        s.add([ev("u1", "later", 200, "e-later")])
        started = time.perf_counter()
        assert s.delete_user("erase-me-9c") == 1
        assert s.add([ev("u2", "after", 201, "e-after")]) == 1
        assert time.perf_counter() - started < 5.0  # not the busy timeout's 10 s
        scan.close()  # the read ends: the background scrub empties the WAL within a few seconds
        deadline = time.time() + 10
        while any(b"erase-me-9c" in f.read_bytes() for f in tmp_path.glob("events.db-wal")) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(b"erase-me-9c" in f.read_bytes() for f in tmp_path.glob("events.db*"))
    finally:
        reader.close()
        s.close()


def test_events_of_one_time_are_read_back_in_the_order_they_were_stored(store):
    """A request's events without a time all get the same one: SQLite reads them back in the
    order stored; Redis read them in its members' text order ("ms-10" before "ms-2")."""
    assert store.add([ev("u", f"i{n:02d}", 50.0) for n in range(20)]) == 20
    assert [i for i, _, _ in store.history("u", 10)] == [f"i{n:02d}" for n in range(10, 20)]
    assert store.delete_user("u") == 20 and store.history("u", 10) == []
    store.add([ev("v", f"j{n:02d}", 60.0) for n in range(15)])
    assert store.prune(61.0) == 15 and store.history("v", 5) == []


def test_redis_history_members_written_before_the_padded_ids_are_still_erased_and_pruned(redis_server):
    server = redis_server
    server.flush()
    s = open_store(server.url)
    try:
        r, p = s._r, s.prefix
        for n, (user, ts) in enumerate([("old", 5.0), ("old", 6.0), ("aged", 1.0)]):  # as the code before wrote them
            sid = r.xadd(f"{p}log", {"u": user, "i": f"x{n}", "t": repr(ts), "y": "view", "w": "1.0", "e": "", "r": ""})
            r.zadd(f"{p}h:{user}", {f"{sid}\x1fx{n}\x1f1.0": ts})
        assert [i for i, _, _ in s.history("old", 5)] == ["x0", "x1"]
        s.add([ev("old", "after", 6.0)])  # stored since, at the same time as x1: read after it, as SQLite reads them
        assert [i for i, _, _ in s.history("old", 5)] == ["x0", "x1", "after"]  # was x0, after, x1 (text order)
        assert s.delete_user("old") == 3 and r.xlen(f"{p}log") == 1
        assert s.prune(2.0) == 1 and r.zcard(f"{p}h:aged") == 0 and r.xlen(f"{p}log") == 0
    finally:
        s.close()


def test_a_sqlite_prune_erases_in_chunks_of_their_own_transactions(tmp_path, monkeypatch):
    """One DELETE held the write lock for the whole prune (5 µs a row: millions of rows past
    the other processes' 10 s busy timeout); each chunk is its own transaction now."""
    import groundrec.shared.events.sqlite as sqlite

    monkeypatch.setattr(sqlite, "PRUNE_CHUNK", 7)
    s = open_store(f"sqlite:///{tmp_path}/events.db")
    try:
        s.add([ev(f"u{n % 4}", f"i{n}", n, f"e{n}") for n in range(50)])
        transactions = []
        erase = s._erase
        monkeypatch.setattr(s, "_erase", lambda *a, **k: transactions.append(a) or erase(*a, **k))
        deletes = lambda: [a for a in transactions if a[0].startswith("DELETE")]  # noqa: E731
        assert s.prune(30.0) == 30 and s.count() == 20 and len(deletes()) == 5  # 7+7+7+7+2
        assert min(ts for _, ts, _ in s.history("u1", 50)) >= 30
    finally:
        s.close()


def test_redis_popularity_reads_only_the_entries_stored_in_its_window(redis_server):
    """Every worker asks for the popularity each minute: it read the whole log each time. The
    stream's ids are arrival times; an entry stored long before the window is not read."""
    import time

    redis_server.flush()
    s = open_store(redis_server.url)
    try:
        now = time.time()
        s._r.xadd(f"{s.prefix}log", {"u": "u", "i": "old", "t": repr(now), "y": "view", "w": "1.0", "e": "", "r": ""},
                  id="1000-0")  # stored in 1970 (an entry of the log's far past, read as recent by its time)
        s.add([ev("u", "new", now)])
        assert s.popularity(since=now - 60) == {"new": 1.0}
        assert sorted(e.item_id for b in s.scan(since=now - 60) for e in b) == ["new", "old"]  # scan reads all
    finally:
        s.close()


def test_many_erasures_beside_a_long_reader_start_one_background_scrubber(tmp_path):
    """Each erasure (two a DELETE /users) beside a long read started a thread of its own, each
    holding the write lock a moment every second: one scrubber a file now."""
    import threading

    s = open_store(f"sqlite:///{tmp_path}/events.db")
    reader = open_store(f"sqlite:///{tmp_path}/events.db")
    try:
        s.add([ev(f"u{n}", f"i{n}", n, f"e{n}") for n in range(60)])
        scan = reader.scan(chunk=10)
        next(scan)
        s.add([ev("x", "y", 100, "e-x")])
        before = {t for t in threading.enumerate() if t.name == "groundrec-wal-scrub"}
        for n in range(20):
            s.delete_user(f"u{n}")
        started = {t for t in threading.enumerate() if t.name == "groundrec-wal-scrub"} - before
        assert len(started) == 1  # the reader holds its snapshot: one scrubber waits it out, not one an erasure
        scan.close()
    finally:
        reader.close()
        s.close()


def test_an_export_after_a_prune_keeps_every_archived_day_an_old_event_reaches_and_counts_rows_once(store, tmp_path):
    """An event dated before the prune's cut that arrived after it (a clock never set, a
    backfill) made the export write from that day on: the archived days between, which only
    the archive holds, were removed as "erased", and that day was written again from the store
    alone. A prune cut short after its mark left rows both the store and the archive hold:
    exported twice."""
    import pyarrow.dataset as ds

    from groundrec.shared.events.export import export

    day = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    store.add([ev(f"u{d}", f"i{d}", day + d * 86_400 + 60, eid=f"e{d}") for d in range(6)])
    out = tmp_path / "archive"
    export(store, out)
    store.prune(day + 4 * 86_400)  # days 0-3 are only in the archive now
    store.add([ev("u9", "backfill", day + 86_400 + 120, eid="b1")])  # dated day 1, arrived after the prune
    export(store, out)
    archived = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert sorted(archived.column("item_id").to_pylist()) == sorted([f"i{d}" for d in range(6)] + ["backfill"])

    later = day + 10 * 86_400
    store.add([ev("u7", f"j{h}", later + 3600 * h, eid=f"j{h}") for h in range(6)])
    export(store, out)
    store.prune(later + 3 * 3600 + 1)
    store.add([ev("u7", f"j{h}", later + 3600 * h, eid=f"j{h}") for h in range(3)])  # as if that prune stopped short
    export(store, out)
    that_day = ds.dataset(out / "day=2026-01-11", format="parquet").to_table().column("item_id").to_pylist()
    assert sorted(that_day) == [f"j{h}" for h in range(6)]


def test_an_export_from_a_store_restored_from_an_older_backup_loses_no_archived_day(tmp_path):
    """Restoring a backup (or losing the store and starting afresh) leaves the store holding
    less than the archive: every archived day between the first and the last day written that
    the store lacked was removed as "erased", and a day written again kept only the store's
    rows. Only an erasure takes a row out of the archive, and a user erased after the backup
    (whose erasure the restored store forgot) stays out of it. (The export reads a store
    through ``EventStore`` alone: one backend shows it.)"""
    import pyarrow.dataset as ds

    from groundrec.shared.events.export import export

    day = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    out = tmp_path / "archive"
    early = [ev("a", f"i{d}", day + d * 86_400 + 60, eid=f"e{d}") for d in range(2)]
    backup = open_store(f"sqlite:///{tmp_path}/backup.db")  # the backup: days 0 and 1 (the morning)
    live = open_store(f"sqlite:///{tmp_path}/live.db")
    try:
        backup.add(early)
        live.add(early + [ev("a", "evening", day + 86_400 + 20 * 3600, eid="ev")]
                 + [ev("b", f"j{d}", day + d * 86_400 + 60, eid=f"f{d}") for d in range(2, 5)]
                 + [ev("gone", "g", day + 3 * 86_400 + 90, eid="g")])
        export(live, out)
        live.delete_user("gone")
        export(live, out)
        # The backup restored as the store: the erased user's event is back, and one new event.
        backup.add([ev("c", "new", day + 5 * 86_400 + 60, eid="n"), ev("gone", "g", day + 3 * 86_400 + 90, eid="g")])
        report = export(backup, out)
    finally:
        backup.close()
        live.close()
    archived = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert sorted(archived.column("item_id").to_pylist()) == ["evening", "i0", "i1", "j2", "j3", "j4", "new"]
    assert report["days"] == 4 and report["events"] == 5  # days 0, 1 (the evening kept), 3 (b's kept, g out) and 5


def test_rows_of_an_erased_user_written_after_the_erasure_are_not_stored_unless_dated_after_it(store):
    """Another worker's late impression batch or an event in flight, dated before the erasure,
    landed after it and stayed: the user's data back after DELETE /users answered. A user who
    comes back (rows dated after the erasure) is stored as anyone."""
    import time

    from groundrec.shared.events.store import user_key

    now = time.time()
    store.add([ev("u", "i", now - 60, eid="a")])
    store.delete_user("u")
    assert store.add([ev("u", "late", now - 30, eid="b"), ev("v", "other", now - 30, eid="c")]) == 1
    assert [i for i, _, _ in store.history("u", 10)] == [] and [i for i, _, _ in store.history("v", 10)] == ["other"]
    shown = lambda rid, user, ts: Impression(rid, user, ts, "v1", ("x",))  # noqa: E731
    assert store.add_impressions([shown("r1", "u", now - 10), shown("r2", "v", now - 10), shown("r3", None, now - 10)]) == 2
    assert store.impression("r1") is None and store.impression("r2") is not None
    later = store.erasures()[user_key("u")] + 1
    assert store.add([ev("u", "back", later, eid="d")]) == 1
    assert store.add_impressions([shown("r4", "u", later)]) == 1
    assert [i for i, _, _ in store.history("u", 10)] == ["back"]


def test_an_erasure_again_keeps_the_latest_erasure_time_on_both_backends(store):
    """The service erases twice; the second finds no event and is stamped now, earlier than the
    first's (the user's event dated ahead): Redis overwrote it, and the export then kept that
    event in an archived day it did not rewrite. SQLite kept the later one."""
    import time

    from groundrec.shared.events.store import user_key

    ahead = time.time() + 3_600
    store.add([ev("u", "i", ahead, eid="a")])
    store.delete_user("u")
    store.delete_user("u")
    assert store.erasures()[user_key("u")] >= ahead


def test_an_archived_day_that_cannot_be_read_is_set_aside_not_fatal(tmp_path):
    """Every day written again is read first now: an empty day folder, a file an older export's
    crash cut short or another table put in the archive stopped every nightly export. Such a day
    is moved aside (hidden from readers, named in the report) and written from the store."""
    import pyarrow.dataset as ds

    from groundrec.shared.events.export import export

    day = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    out = tmp_path / "archive"
    s = open_store(f"sqlite:///{tmp_path}/e.db")
    try:
        s.add([ev("a", f"i{d}", day + d * 86_400 + 60, eid=f"e{d}") for d in range(4)])
        export(s, out)
        (out / "day=2026-01-01" / "events-0.parquet").write_bytes(b"PAR1 cut short")
        for f in (out / "day=2026-01-02").iterdir():
            f.unlink()  # an empty day folder
        report = export(s, out)
    finally:
        s.close()
    assert sorted(n.split(".unreadable-")[0] for n in report["days_set_aside"]) == [".day=2026-01-01",
                                                                                 ".day=2026-01-02"]
    archived = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert sorted(archived.column("item_id").to_pylist()) == ["i0", "i1", "i2", "i3"]


def test_an_erased_user_leaves_the_archive_s_days_the_store_no_longer_holds(store, tmp_path):
    """The export rewrote only the days the store still held: an erased user's events before
    the prune's cut stayed in the archive (and came back on the cut's day), and the job, which
    reads the whole archive, trained on them every night. The store remembers erasures (by a
    hash of the id) and the export scrubs every archived day of them, once."""
    import time

    import pyarrow.dataset as ds

    from groundrec.shared.events.export import export
    from groundrec.shared.events.store import user_key

    day = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    store.add([ev(u, f"{u}-{d}-{h}", day + d * 86_400 + 3600 * h, eid=f"{u}{d}{h}")
               for u in ("gone", "kept") for d in range(4) for h in (1, 20)])
    out = tmp_path / "archive"
    export(store, out)
    store.prune(day + 2 * 86_400 + 12 * 3600)  # days 0 and 1 and the first hours of day 2: the archive's alone
    assert store.delete_user("gone") == 3  # day 2's 20:00 and day 3's two
    assert list(store.erasures()) == [user_key("gone")] and store.erasures()[user_key("gone")] <= time.time()
    report = export(store, out)
    archived = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert set(archived.column("user_id").to_pylist()) == {"kept"} and archived.num_rows == 8
    assert report["days_scrubbed"] == ["2026-01-01", "2026-01-02"]
    store.add([ev("gone", "back", time.time(), eid="back")])  # a user who comes back after the erasure
    report = export(store, out)
    assert report["days_scrubbed"] == []  # each erasure is scrubbed once
    users = ds.dataset(out, format="parquet", partitioning="hive").to_table().column("user_id").to_pylist()
    assert users.count("gone") == 1 and users.count("kept") == 8


def test_the_archive_keeps_twin_events_and_a_crash_mid_scrub_loses_no_day(store, tmp_path):
    """Rows both the store and the archive hold are written once, but two identical events
    without an id (one request's two purchases: the same arrival time) are two events. An event
    dated ahead of the erasure goes with the user. A day the scrub moved aside when it crashed
    is put back; an erasure stamped by a host whose clock is behind the last one scrubbed is
    scrubbed too."""
    import json
    import shutil
    import time

    import pyarrow.dataset as ds

    from groundrec.shared.events.export import SCRUBBED, export

    day = 1_767_225_600.0
    twins = [Event("u1", "i1", day + 60, "purchase", 1.0), Event("u1", "i1", day + 60, "purchase", 1.0)]
    store.add(twins + [ev("u2", "i2", day + 120, eid="a"), ev("u3", "i3", time.time() + 3600, eid="ahead"),
                       ev("u4", "i4", day + 7200, eid="b")])  # after the cut: the cut's day is written again
    out = tmp_path / "archive"
    export(store, out)
    store.prune(day + 3600)  # the cut inside the day: the twins are the archive's alone now
    export(store, out)
    rows = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert rows.column("item_id").to_pylist().count("i1") == 2
    store.delete_user("u3")  # its one event is dated an hour ahead of now
    store.delete_user("u2")
    archive = {p.name for p in out.glob("day=*")}
    moved = out / "day=2026-01-01"
    shutil.copytree(moved, out / ".day=2026-01-01.old")  # as a scrub killed between its two renames
    shutil.rmtree(moved)
    (out / ".day=2026-01-09.new").mkdir()  # as a scrub killed while it wrote a day: only the partial copy goes
    (out / SCRUBBED).write_text(json.dumps({"erasures": {}}))
    export(store, out)
    assert {p.name for p in out.glob("day=*")} <= archive and moved.is_dir() and not list(out.glob(".day=*"))
    left = ds.dataset(out, format="parquet", partitioning="hive").to_table().column("user_id").to_pylist()
    assert sorted(left) == ["u1", "u1", "u4"]  # u2 (archive only) and u3 (dated ahead) scrubbed


def test_a_redis_timeout_says_the_write_may_have_been_stored_not_that_nothing_was(redis_server):
    """A Redis call that times out has been sent: Redis runs it all the same once free. The
    503 said "nothing was stored", which invited a retry that stored an event without an
    event_id twice."""
    import redis

    redis_server.flush()
    store = open_store(redis_server.url)
    store.add([Event("before", "i", 1.0, "view", 1.0)])  # connected, its script loaded: the write below is sent whole
    busy = threading.Thread(target=lambda: redis.Redis.from_url(redis_server.url).eval(
        "local t = redis.call('TIME') while true do local n = redis.call('TIME') "
        "if (n[1] - t[1]) * 1e6 + (n[2] - t[2]) > 3e6 then break end end return 1", 0))
    busy.start()  # Redis busy for 3 s, past the store's 2 s timeout
    try:
        import time

        time.sleep(0.3)
        with pytest.raises(StoreUnavailable) as timed_out:
            store.add([Event("u", "i", 10.0, "view", 1.0)])
        assert timed_out.value.maybe_done and "may have stored it" in timed_out.value.reply()
    finally:
        busy.join()
    assert [i for i, *_ in store.history("u", 10)] == ["i"]  # it was stored after all
    refused = StoreUnavailable("connection refused")
    assert not refused.maybe_done and "nothing was erased" in refused.reply("erased")
    store.close()


def test_an_erasure_during_the_background_scrubber_s_last_try_gets_a_try_of_its_own(tmp_path, monkeypatch):
    """The scrubber emptied the WAL, and before it unregistered, another erasure whose own
    scrub failed found it still registered and left its rows to it: they stayed in the WAL."""
    from groundrec.shared.events import sqlite_schema

    tries, inside, go_on = [], threading.Event(), threading.Event()

    def scrubbed(path):
        tries.append(path)
        if len(tries) == 1:
            return False  # the first erasure's own try: a reader holds a snapshot
        if len(tries) == 2:  # the scrubber's first try succeeds; meanwhile a second erasure's own try fails
            inside.set()
            go_on.wait(5)
            return True
        if len(tries) == 3:
            return False
        return True  # the scrubber's next try: the second erasure's rows go too

    monkeypatch.setattr(sqlite_schema, "_scrubbed", scrubbed)
    db = tmp_path / "events.db"
    assert sqlite_schema.scrub_wal(db) is False  # a scrubber starts in the background
    assert inside.wait(5)
    assert sqlite_schema.scrub_wal(db) is False  # the second erasure: its own try fails, the scrubber has it
    go_on.set()
    import time

    deadline = time.monotonic() + 10
    while str(db.resolve()) in sqlite_schema._SCRUBBING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tries) == 4 and str(db.resolve()) not in sqlite_schema._SCRUBBING  # it tried once more, then left
