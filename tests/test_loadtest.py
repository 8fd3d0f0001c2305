"""The load test's shop traffic (online/loadtest.py) against the real service with an SQLite
event store: besides plain events, feedback that carries the recommendation_id of the answer
the simulated user got, on an item that answer showed, which the server credits to that list."""

from __future__ import annotations

import asyncio

import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.loadtest import format_report, run_load
from groundrec.online.service import create_app
from groundrec.shared.errors import UserError
from groundrec.shared.events import open_store
from helpers import publish_demo, running


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("load"), tiny_vlm(), n_items=30, n_users=6)


def test_shop_traffic_sends_feedback_with_the_id_of_the_answer_each_user_got(published, tmp_path):
    store_url = f"sqlite:///{tmp_path}/events.db"
    cfg = ServeConfig(artifacts=published["artifacts"], events=store_url, compute="thread")
    with running(create_app(cfg)) as url:
        report = asyncio.run(run_load(url, rate=80, duration_s=2.5, concurrency=8, histories=published["histories"],
                                      search_share=0.1, k=5, events_per_recommend=3, users=6, seed=1))
    assert report.errors == {} and report.completed == report.sent
    assert set(report.by_endpoint) == {"/events", "/recommend", "/search"}
    assert 0 < report.feedback < report.by_endpoint["/events"]  # feedback besides the plain events
    assert report.unattributed == 0  # every id named a list shown to that user with that item
    assert f"feedback with a recommendation_id: {report.feedback} events, 0 not credited" in format_report(report)
    store = open_store(store_url)
    try:
        events = [e for b in store.scan() for e in b]
        credited = [e for e in events if e.recommendation_id is not None]
        assert len(events) == report.by_endpoint["/events"] and len(credited) == report.feedback
        for e in credited:  # the list named is the one that user was shown, and it held the item
            shown = store.impression(e.recommendation_id)
            assert shown.user_id == e.user_id and e.item_id in shown.items and e.type == "view"
    finally:
        store.close()


def test_feedback_share_out_of_range_is_refused_before_anything_is_sent():
    with pytest.raises(UserError, match="feedback_share 1.5"):
        asyncio.run(run_load("http://127.0.0.1:9", rate=1, duration_s=1, concurrency=1, histories=[["a"]],
                             events_per_recommend=1, feedback_share=1.5))


def test_failures_are_counted_but_never_timed_nor_rated():
    """Against no server every request fails at once: the report gave those failures a p50 of
    a fraction of a millisecond and an "achieved" rate; the rate and latencies are of answers."""
    from groundrec.online.testing import free_port

    report = asyncio.run(run_load(f"http://127.0.0.1:{free_port()}", rate=50, duration_s=0.5, concurrency=4,
                                  histories=[["a", "b"]], search_share=0.0, timeout_s=1.0))
    assert report.sent > 0 and report.completed == report.sent and report.ok == 0
    assert sum(report.errors.values()) == report.sent and report.achieved_rps == 0.0 and report.latency_ms == {}
    assert "(0 ok), achieved 0.0 ok/s" in format_report(report)


def test_a_request_sent_late_is_timed_from_when_it_was_due(published):
    """The generator stalls (its event loop blocked 0.4 s, as a busy shared core does): the
    requests due meanwhile went out late, and were timed from when they went out, so the stall
    never showed in the latencies. Timed from when they were due, it does, and the report says
    how late sends were."""
    import time

    cfg = ServeConfig(artifacts=published["artifacts"], events="none", compute="thread")

    async def stalled():
        async def stall():
            await asyncio.sleep(0.5)
            time.sleep(0.4)  # the loop blocked: nothing is sent or read

        load = asyncio.create_task(run_load(url, rate=50, duration_s=2.0, concurrency=200,  # none dropped
                                            histories=published["histories"], search_share=0.0, k=5))
        await stall()
        return await load

    with running(create_app(cfg)) as url:
        report = asyncio.run(stalled())
    assert report.ok == report.sent == 100 and report.dropped == 0
    assert report.send_lag_ms >= 300  # the first request due in the stall went out about 0.4 s late
    assert report.latency_ms["p90"] >= 100  # about 20 of 100 requests waited through the stall
    assert "sent up to" in format_report(report)
