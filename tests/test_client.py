"""The HTTP client (online/client.py): request bodies carry what the caller set and nothing
else, so a newer client still talks to a server that does not know a newer field; feedback
carries the answer's recommendation_id to the real server, which credits it to the list shown."""

import asyncio

import pytest

from groundrec.online.client import AsyncClient, Client, _batch_body, _feedback_body, _recommend_body, _search_body
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.shared.events import open_store
from helpers import publish_demo, running


def test_bodies_carry_only_what_the_caller_set():
    assert _recommend_body(["a", "b"], 5) == {"history": ["a", "b"], "k": 5}
    assert _recommend_body(["a"], 5, diversity=0.2, max_per={}) == {"history": ["a"], "k": 5, "diversity": 0.2,
                                                                   "max_per": {}}
    assert _batch_body([{"history": ["a"]}, {"history": ["b"], "k": 2}], 3) == {
        "batch": [{"history": ["a"], "k": 3}, {"history": ["b"], "k": 2}]}
    assert _search_body("black top", 4, with_fields=True) == {"text": "black top", "k": 4, "with_fields": True}


# --- feedback with the answer's recommendation_id, against the real server ---------------

@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("client"), tiny_vlm(), n_items=30, n_users=6)


def test_feedback_needs_an_answer_id_and_always_carries_an_event_id():
    body = _feedback_body("r" * 32, "i1", "u1", "view", {})
    [event] = body["events"]
    assert event["recommendation_id"] == "r" * 32 and event["type"] == "view" and len(event["event_id"]) == 32
    assert _feedback_body("r1", "i1", "u1", "cart", {"event_id": "mine", "weight": 2.0})["events"][0]["event_id"] == "mine"
    with pytest.raises(ValueError, match="recommendation_id"):
        _feedback_body(None, "i1", "u1", "view", {})


def test_feedback_and_add_events_credit_the_list_shown_on_a_real_server(published, tmp_path):
    store_url = f"sqlite:///{tmp_path}/events.db"
    cfg = ServeConfig(artifacts=published["artifacts"], events=store_url, compute="thread")
    history = published["histories"][0]
    with running(create_app(cfg)) as url, Client(url) as client:
        shown = client.recommend(history, k=4, user_id="u1")
        assert len(shown.recommendation_id) == 32 and shown.arm is None and shown.teams is None
        first, second, third = (i.item_id for i in shown.items[:3])
        reply = client.feedback(shown, first, "u1", event_id="click-1")
        assert (reply.accepted, reply.duplicates, reply.unattributed) == (1, 0, 0)
        again = client.feedback(shown, first, "u1", event_id="click-1")  # what a retry sends: stored once
        assert (again.accepted, again.duplicates) == (0, 1)
        by_id = client.feedback(shown.recommendation_id, second, "u1", type="purchase")
        assert (by_id.accepted, by_id.unattributed) == (1, 0)
        stranger = client.feedback(shown, third, "u2")  # shown to u1, not u2: stored without the id, counted
        assert (stranger.accepted, stranger.unattributed) == (1, 1)
        passed = client.add_events([{"user_id": "u1", "item_id": third, "type": "cart",
                                     "recommendation_id": shown.recommendation_id}])
        assert (passed.accepted, passed.unattributed) == (1, 0)

        async def from_async():
            c = AsyncClient(url)
            try:
                answer = await c.recommend(user_id="u3", k=3)
                return answer, await c.feedback(answer, answer.items[0].item_id, "u3")
            finally:
                await c.aclose()

        async_answer, async_reply = asyncio.run(from_async())
        assert async_answer.recommendation_id != shown.recommendation_id
        assert (async_reply.accepted, async_reply.unattributed) == (1, 0)
        with pytest.raises(ValueError, match="recommendation_id"):
            client.feedback(shown.model_copy(update={"recommendation_id": None}), first, "u1")
    store = open_store(store_url)
    try:
        kept = {(e.user_id, e.item_id, e.type): e.recommendation_id for b in store.scan() for e in b}
    finally:
        store.close()
    rid = shown.recommendation_id
    assert kept == {("u1", first, "view"): rid, ("u1", second, "purchase"): rid, ("u2", third, "view"): None,
                    ("u1", third, "cart"): rid,
                    ("u3", async_answer.items[0].item_id, "view"): async_answer.recommendation_id}
