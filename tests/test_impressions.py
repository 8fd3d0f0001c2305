"""The impression log (online/impressions.py) against a real SQLite event store."""

import asyncio
import json
import logging
import threading
import time

import pytest

from groundrec.online.errors import Unavailable
from groundrec.online.impressions import ImpressionLog, new_recommendation_id, sampled
from groundrec.shared.events import StoreUnavailable, open_store
from helpers import logged


def answer(version, *items):
    return json.dumps({"items": [{"item_id": i, "score": 0.5} for i in items], "version": version}).encode()


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/events.db")
    yield s
    s.close()


def test_answers_are_written_after_the_fact_and_readable_after_flush(store):
    written = []
    imp = ImpressionLog(lambda: store, flush_interval_s=5.0, on_written=written.extend)
    try:
        rid = new_recommendation_id()
        assert imp.log(rid, "u1", answer("v7", "a", "b", "c"), "B", {"strategy": "mean", "k": 3})
        imp.log(new_recommendation_id(), None, answer("v7", "d"), None, {}, endpoint="search")
        start = time.perf_counter()
        imp.flush(timeout_s=10)
        assert time.perf_counter() - start < 4  # flush wakes the writer: no waiting out the 5 s interval
        got = store.impression(rid)
        assert got.items == ("a", "b", "c") and got.version == "v7" and got.arm == "B" and got.user_id == "u1"
        assert json.loads(got.settings) == {"k": 3, "strategy": "mean"}
        assert imp.written == 2 and imp.dropped == 0 and len(written) == 2
    finally:
        imp.close()


def test_a_shown_answer_is_logged_from_its_ids_without_parsing_its_json(store):
    """The batch worker hands over (JSON, ids, version): the logger takes the ids as given (a
    JSON it could not parse is never read)."""
    imp = ImpressionLog(lambda: store, flush_interval_s=5.0)
    try:
        rid = new_recommendation_id()
        assert imp.log(rid, "u1", (b"not json", ("x", "y"), "v9"), None, {"k": 2})
        imp.flush()
        got = store.impression(rid)
        assert got.items == ("x", "y") and got.version == "v9" and imp.dropped == 0
    finally:
        imp.close()


def test_recommendation_ids_are_unique_hex_and_sort_by_when_they_were_made():
    ids = [new_recommendation_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    time.sleep(0.002)
    later = new_recommendation_id()
    assert all(later > i for i in ids)  # the store's unique index grows at its end
    assert abs(int(later[:12], 16) / 1000 - time.time()) < 5


def test_logged_without_flush_by_the_writers_own_interval(store):
    written = threading.Event()
    imp = ImpressionLog(lambda: store, flush_interval_s=0.2, on_written=lambda batch: written.set())
    try:
        rid = new_recommendation_id()
        imp.log(rid, "u1", answer("v", "a"), None, {})
        assert written.wait(10)  # nobody flushed: the writer woke on its own
        assert store.impression(rid) is not None
    finally:
        imp.close()


@pytest.mark.parametrize("error", [StoreUnavailable, Unavailable])  # the store's, and the service's (Events.store)
def test_a_store_that_is_down_drops_and_counts_never_raises(store, error):
    """A store that cannot be reached is a warning, not a bug's traceback every flush."""
    def down():
        raise error("no store")

    with logged("groundrec.impressions", logging.DEBUG) as records:
        imp = ImpressionLog(down, flush_interval_s=0.05)
        try:
            for _ in range(3):
                imp.log(new_recommendation_id(), "u", answer("v", "a"), None, {})
            imp.flush()
            assert imp.dropped == 3 and imp.written == 0
        finally:
            imp.close()
    found = [r for r in records if "impressions not logged" in r.getMessage()]
    assert found and all(r.levelname == "WARNING" and r.exc_info is None for r in found)


def test_a_full_queue_drops_instead_of_growing(store):
    gate, entered = threading.Event(), threading.Event()

    def slow():
        entered.set()
        gate.wait(5)
        return store

    imp = ImpressionLog(slow, flush_interval_s=0.01, max_pending=5)
    try:
        assert imp.log(new_recommendation_id(), "u", answer("v", "a"), None, {})
        assert entered.wait(5)  # the writer has taken that one and is blocked on the store
        accepted = sum(imp.log(new_recommendation_id(), "u", answer("v", "a"), None, {}) for _ in range(20))
        assert accepted == 5 and imp.dropped == 15
        gate.set()
        imp.flush(timeout_s=10)
        assert imp.written == 6
    finally:
        gate.set()
        imp.close()


def test_a_flush_asked_while_the_writer_is_busy_is_not_lost(store):
    """A flush that comes while the writer is in a write (not waiting) still has what it asked
    for written at once, not after the writer's next interval (60 s here)."""
    gate, entered = threading.Event(), threading.Event()

    def slow():
        entered.set()
        gate.wait(10)
        return store

    imp = ImpressionLog(slow, flush_interval_s=60)
    try:
        imp.log(new_recommendation_id(), "u", answer("v", "a"), None, {})
        first = threading.Thread(target=imp.flush, kwargs={"timeout_s": 10})
        first.start()
        assert entered.wait(10)  # the writer is writing the first one
        rid = new_recommendation_id()
        imp.log(rid, "u", answer("v", "b"), None, {})
        threading.Timer(1.0, gate.set).start()  # the write ends after this flush has asked
        imp.flush(timeout_s=8)
        first.join(10)
        assert imp.written == 2 and store.impression(rid) is not None
    finally:
        gate.set()
        imp.close()


def test_sampling_keeps_whole_users_at_about_the_share():
    users = [f"user-{n}" for n in range(20_000)]
    kept = [u for u in users if sampled(u, 0.25)]
    assert 0.23 < len(kept) / len(users) < 0.27
    assert all(sampled(u, 0.25) for u in kept[:100])  # the same user, the same decision
    assert sampled("x", 1.0) and not sampled("x", 0.0)


def test_a_click_waits_for_a_list_that_was_logged_its_user_s_or_a_search_s_sampled_by_its_id(store):
    """With a share below 1 a list shown to no user id (a search's) is sampled by its id: a click
    on it by a user outside the share waits for it to land (it dropped the id before), and one
    on a list nobody logged does not wait."""
    imp = ImpressionLog(lambda: store, share=0.5, flush_interval_s=60)
    try:
        ids = [new_recommendation_id() for _ in range(200)]
        outside = next(u for u in (f"user-{n}" for n in range(1000)) if not sampled(u, 0.5))
        inside = next(u for u in (f"user-{n}" for n in range(1000)) if sampled(u, 0.5))
        logged, not_logged = (next(i for i in ids if sampled(i, 0.5) is want) for want in (True, False))
        assert imp.landed_by(logged, outside) > time.time()  # the search's list, logged by its id
        assert imp.landed_by(not_logged, outside) == 0.0  # neither logged
        assert imp.landed_by(not_logged, inside) > time.time()  # the user's own list
    finally:
        imp.close()


def test_an_impression_is_stamped_when_answered_not_when_written(store):
    gate = threading.Event()

    def late():
        gate.wait(5)
        return store

    imp = ImpressionLog(late, flush_interval_s=0.01)
    try:
        rid = new_recommendation_id()
        before = time.time()
        imp.log(rid, "u1", answer("v", "a"), None, {})
        answered = time.time()
        time.sleep(0.3)  # written well after the answer: a click sent meanwhile must not predate its list
        gate.set()
        imp.flush()
        assert before <= store.impression(rid).timestamp <= answered
    finally:
        gate.set()
        imp.close()


def test_erasing_a_user_erases_its_queued_lists_and_those_another_worker_writes_late(tmp_path):
    """DELETE /users/{id} (``Events.delete_user``): this worker's queue is written first, and
    a list another worker showed just before is erased once it must have landed."""
    from groundrec.online.config import ServeConfig
    from groundrec.online.events import Events

    url = f"sqlite:///{tmp_path}/events.db"
    events = Events(ServeConfig(artifacts=str(tmp_path), events=url), serving=None)
    events.impressions = mine = ImpressionLog(events.store, flush_interval_s=0.3)
    other_store = open_store(url)
    other = ImpressionLog(lambda: other_store, flush_interval_s=0.3)  # another worker's log
    try:
        queued, late, kept = new_recommendation_id(), new_recommendation_id(), new_recommendation_id()
        mine.log(queued, "gone", answer("v", "a"), None, {})
        other.log(late, "gone", answer("v", "b"), None, {})
        mine.log(kept, "stays", answer("v", "c"), None, {})
        asyncio.run(events.delete_user("gone"))
        mine.flush()
        other.flush()
        store = events.store()
        assert store.impression(queued) is None and store.impression(late) is None
        assert store.impression(kept).user_id == "stays"
    finally:
        mine.close()
        other.close()
        other_store.close()
        events.close()


def test_a_store_failing_midway_counts_the_chunks_written_as_written(store, monkeypatch):
    """Written in chunks: a failure after the first chunk dropped (and counted dropped) the
    whole batch, though the first chunk was in the store."""
    import groundrec.online.impressions as impressions

    monkeypatch.setattr(impressions, "WRITE_CHUNK", 2)
    written, calls = [], []

    class FailsSecond:
        def add_impressions(self, rows):
            calls.append(len(rows))
            if len(calls) == 2:
                raise StoreUnavailable("lost midway")
            store.add_impressions(rows)

    imp = ImpressionLog(lambda: FailsSecond(), flush_interval_s=5.0, on_written=written.extend)
    try:
        rids = [new_recommendation_id() for _ in range(5)]
        for rid in rids:
            imp.log(rid, "u", answer("v", "a"), None, {})
        imp.flush()
        assert (imp.written, imp.dropped) == (2, 3) and [w.recommendation_id for w in written] == rids[:2]
        assert store.impression(rids[0]) is not None and store.impression(rids[2]) is None
    finally:
        imp.close()
