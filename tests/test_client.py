"""The HTTP client (online/client.py, its bodies from online/client_bodies.py): request bodies
carry what the caller set and nothing else, so a newer client still talks to a server that does
not know a newer field; feedback carries the answer's recommendation_id to the real server,
which credits it to the list shown; the items API's methods keep the live catalog of a real
server, and its refusals arrive as ``GroundrecError`` with the server's reason."""

import asyncio

import pytest

from groundrec.online.client import AsyncClient, Client, GroundrecError
from groundrec.online.client_bodies import (_batch_body, _events_body, _feedback_body, _item_path, _items_body, _list_path,
                                            _recommend_body, _search_body)
from groundrec.online.config import ServeConfig
from groundrec.online.schemas import RecommendRequest, UserQuery
from groundrec.online.service import create_app
from groundrec.shared.events import open_store
from helpers import publish_demo, running


def test_bodies_carry_only_what_the_caller_set():
    assert _recommend_body(["a", "b"], 5) == {"history": ["a", "b"], "k": 5}
    assert _recommend_body(["a"], 5, diversity=0.2, max_per={}) == {"history": ["a"], "k": 5, "diversity": 0.2,
                                                                   "max_per": {}}
    assert _batch_body([{"history": ["a"]}, {"history": ["b"], "k": 2}], 3) == {
        "batch": [{"history": ["a"], "k": 3}, {"history": ["b"], "k": 2}]}
    # the batch's k for a UserQuery that names none, as for a dict
    assert _batch_body([UserQuery(history=["a"]), UserQuery(history=["b"], k=2)], 3) == {
        "batch": [{"history": ["a"], "k": 3}, {"history": ["b"], "k": 2}]}
    assert _search_body("black top", 4, with_fields=True) == {"text": "black top", "k": 4, "with_fields": True}
    assert _item_path("a/b?c d", "/similar") == "/items/a%2Fb%3Fc%20d/similar"
    assert _list_path("/latest", 3, {"colour": "red"}) == "/latest?k=3&filters=%7B%22colour%22%3A+%22red%22%7D"
    assert _items_body(iter([{"item_id": "a", "title": "t"}])) == {"items": [{"item_id": "a", "title": "t"}]}
    with pytest.raises(GroundrecError, match=r"items\[1\].*item_id"):
        _items_body([{"item_id": "a"}, {"title": "no id"}])
    # no k unless asked: the server's default, or the user's experiment arm's, decides
    assert _recommend_body(["a"]) == {"history": ["a"]} and _batch_body([{"history": ["a"]}]) == {
        "batch": [{"history": ["a"]}]}
    # arguments the service would refuse, or misread, are refused before sending (422, naming them)
    for bad, says in ((lambda: _recommend_body("demo-0001", 5), "list of item ids"),
                      (lambda: _events_body({"user_id": "u", "item_id": "a"}), "list of events"),
                      (lambda: _events_body(["u"]), r"events\[0\]"),
                      (lambda: _feedback_body(None, "a", "u", "view", {}), "recommendation_id"),
                      (lambda: _items_body({"item_id": "a"}), "list of items")):
        with pytest.raises(GroundrecError, match=says) as refused:
            bad()
        assert refused.value.status == 422
    for bad, field in ((lambda: _recommend_body(["a"], 0), "k"), (lambda: _search_body("x", 3, k2=1), "k2"),
                       (lambda: _batch_body([{"history": ["a"], "diversity": 3}], 3), "diversity")):
        with pytest.raises(GroundrecError) as refused:  # refused before sending, as the service would refuse it
            bad()
        assert refused.value.status == 422 and field in refused.value.message
    # what the server would ignore beside a batch is refused, naming it
    with pytest.raises(ValueError, match="exclude, filters, k beside batch"):
        RecommendRequest.model_validate({"batch": [{"history": ["a"]}], "k": 3, "filters": {"c": "r"}, "exclude": ["b"]})


def test_the_client_waits_as_long_as_the_server_asks_before_retrying():
    import httpx

    c = Client(backoff_s=0.2)
    shed = httpx.Response(503, headers={"Retry-After": "2"})
    assert c._delay(0, shed) == 2.0 and c._delay(4, shed) == 3.2  # the longer of the two
    assert c._delay(0, None) == 0.2 and c._delay(0, httpx.Response(503)) == 0.2
    assert c._delay(0, httpx.Response(503, headers={"Retry-After": "3600"})) == 30.0  # bounded
    assert c._delay(1, httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) == 0.4


# --- feedback with the answer's recommendation_id, against the real server ---------------

@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("client"), tiny_vlm(), n_items=30, n_users=6)


def test_feedback_needs_an_answer_id_and_always_carries_an_event_id():
    body = _feedback_body("r" * 32, "i1", "u1", "view", {})
    [event] = body["events"]
    assert event["recommendation_id"] == "r" * 32 and event["type"] == "view" and len(event["event_id"]) == 32
    assert _feedback_body("r1", "i1", "u1", "cart", {"event_id": "mine", "weight": 2.0})["events"][0]["event_id"] == "mine"
    with pytest.raises(GroundrecError, match="recommendation_id"):
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
        with pytest.raises(GroundrecError, match="recommendation_id"):
            client.feedback(shown.model_copy(update={"recommendation_id": None}), first, "u1")
        # Ids of dots alone are ids like any other (a client resolved "/users/.." to "/").
        for odd in (".", ".."):
            client.add_events([{"user_id": odd, "item_id": first}])
            assert client.delete_user(odd)["deleted_events"] == 1
        # A reply that is not the server's JSON answer (a redirect, a page): a GroundrecError naming it.
        with pytest.raises(GroundrecError, match="not the server's JSON answer"):
            client._call("GET", "/ui/search")
        with pytest.raises(GroundrecError, match="307"):
            client._call("GET", "/popular/")  # the trailing slash: a redirect, not followed
    store = open_store(store_url)
    try:
        kept = {(e.user_id, e.item_id, e.type): e.recommendation_id for b in store.scan() for e in b}
    finally:
        store.close()
    rid = shown.recommendation_id
    assert kept == {("u1", first, "view"): rid, ("u1", second, "purchase"): rid, ("u2", third, "view"): None,
                    ("u1", third, "cart"): rid,
                    ("u3", async_answer.items[0].item_id, "view"): async_answer.recommendation_id}


# --- the items API through both clients, against the real server ---------------------------

NEW = {"title": "zebra striped raincoat", "description": "A zebra striped raincoat.", "category": "raincoat",
       "colour": "zebra"}


def _ids(answer) -> list[str]:
    return [i.item_id for i in answer.items]


def test_the_items_api_through_the_client_on_a_real_server(published, tmp_path):
    cfg = ServeConfig(artifacts=published["artifacts"], events=f"sqlite:///{tmp_path}/events.db", compute="thread")
    history = published["histories"][0]
    with running(create_app(cfg)) as url, Client(url) as client:
        put = client.put_item("live-1", NEW)
        assert put["accepted"] == 1 and put["applied_through"] >= 1
        assert _ids(client.search("zebra striped raincoat", k=3))[0] == "live-1"  # found at once
        assert "live-1" in _ids(client.recommend(history, k=60))  # and recommendable
        latest = client.latest(k=1)
        assert _ids(latest) == ["live-1"] and len(latest.recommendation_id) == 32
        assert _ids(client.latest(k=5, filters={"category": "raincoat"})) == ["live-1"]
        assert client.item("live-1")["title"] == NEW["title"]

        assert client.patch_item("live-1", {"hidden": True})["applied_through"] > put["applied_through"]
        assert "live-1" not in _ids(client.search("zebra striped raincoat", k=60))
        hidden = client.item("live-1", full=True)  # whether answers may show it: the whole answer
        assert hidden["shown"] is False and hidden["item"]["title"] == NEW["title"] and hidden["version"]
        client.patch_item("live-1", {"hidden": False})
        assert client.item("live-1", full=True)["shown"] is True

        feed = client.put_items([{"item_id": f"feed {n}", **NEW, "title": f"quokka hat {n}"} for n in range(3)])
        assert feed["accepted"] == 3
        assert set(_ids(client.search("quokka hat", k=3))) == {"feed 0", "feed 1", "feed 2"}  # an id with a space
        assert client.item("feed 1")["title"] == "quokka hat 1"

        assert client.delete_item("live-1")["accepted"] == 1
        with pytest.raises(GroundrecError) as gone:
            client.item("live-1")
        assert gone.value.status == 404
        assert "live-1" not in _ids(client.search("zebra striped raincoat", k=60))

        # refusals: the client's error with the server's reason, and nothing applied
        with pytest.raises(GroundrecError) as bad:
            client.put_item("x1", {**NEW, "colour_code": 3})
        assert bad.value.status == 422 and "colour_code" in bad.value.message
        with pytest.raises(GroundrecError) as missing:
            client.patch_item("no-such-item", {"hidden": True})
        assert missing.value.status == 404 and "no-such-item" in missing.value.message
        with pytest.raises(GroundrecError) as deleted_twice:
            client.delete_item("live-1")
        assert deleted_twice.value.status == 404
        with pytest.raises(GroundrecError) as bad_feed:
            client.put_items([{"item_id": "y1", **NEW, "title": {"nested": 1}}])
        assert bad_feed.value.status == 422 and "flat object" in bad_feed.value.message
        with pytest.raises(GroundrecError):
            client.item("x1")

        with pytest.raises(GroundrecError) as tail:  # /items/shop%2Fsimilar is shop's similar items
            client.put_items([{"item_id": "shop/similar", **NEW}])
        assert tail.value.status == 422 and "/items/{id}/similar" in tail.value.message

        async def from_async():
            async with AsyncClient(url) as c:  # an async context manager, closed on the way out
                got = await _async_items(c)
            assert c._http.is_closed
            return got

        async def _async_items(c):
            try:
                put = await c.put_item("async-1", {**NEW, "title": "okapi scarf"})
                found = _ids(await c.search("okapi scarf", k=1))
                feed = await c.put_items([{"item_id": "async-2", **NEW, "title": "okapi gloves"}])
                newest = _ids(await c.latest(k=2))
                patched = await c.patch_item("async-2", {"hidden": True})
                hidden = _ids(await c.latest(k=2, filters={"category": "raincoat"}))
                await c.delete_item("async-1")
                try:
                    await c.item("async-1")
                except GroundrecError as e:
                    return put, found, feed, newest, patched, hidden, e
            finally:
                assert not c._http.is_closed

        put, found, feed, newest, patched, hidden, error = asyncio.run(from_async())
        assert put["accepted"] == feed["accepted"] == patched["accepted"] == 1
        assert found == ["async-1"] and newest == ["async-2", "async-1"] and hidden[0] == "async-1"
        assert error.status == 404


def test_readiness_and_thumbnails_through_both_clients(published):
    """Every route of the API has its client method: /readyz (an answer, ready or not, never an
    error) and an item's thumbnail (bytes, not JSON)."""
    cfg = ServeConfig(artifacts=published["artifacts"], events="none", compute="thread")
    item = published["histories"][0][0]
    with running(create_app(cfg)) as url, Client(url) as client:
        ready = client.ready()
        assert ready["ready"] is True and ready["version"]
        thumb = client.thumbnail(item)
        assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"
        assert b"<svg" in client.thumbnail("no-such-item")  # the page's placeholder, as for an item without one

        async def both():
            async with AsyncClient(url) as a:
                return await a.ready(), await a.thumbnail(item)
        assert asyncio.run(both()) == (ready, thumb)
    gone = Client(url, timeout=2).ready()  # the server stopped: an answer, not an exception
    assert gone["ready"] is False and "no answer" in gone["reason"]


def test_the_local_client_answers_an_item_and_a_bad_k_as_the_server_does(published):
    """LocalClient.item gave the catalog's raw values (NaN, datetimes, bytes) where the server
    answers JSON; /similar with k=0 was a 404 for an unknown id locally, a 422 from the server."""
    from groundrec.online.client import LocalClient

    cfg = ServeConfig(artifacts=published["artifacts"], events="none", compute="thread")
    item = published["histories"][0][0]
    local = LocalClient(published["artifacts"])
    with running(create_app(cfg)) as url, Client(url) as client:
        assert local.item(item, full=True) == client.item(item, full=True)
        for c in (client, local):
            with pytest.raises(GroundrecError) as refused:
                c.similar("no-such-item", k=0)
            assert refused.value.status == 422
            with pytest.raises(GroundrecError) as missing:
                c.similar("no-such-item", k=3)
            assert missing.value.status == 404


def test_an_item_s_values_are_written_as_json_by_one_rule():
    """What GET /items/{id} and LocalClient.item both return (``answers.item_json``)."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from pydantic_core import from_json

    from groundrec.online.answers import item_json

    row = {"price": float("nan"), "photo": b"\x00\x01", "added": datetime(2026, 1, 2, tzinfo=timezone.utc),
           "cost": Decimal("1.50"), "title": "coat"}
    assert from_json(item_json({"item": row})) == {"item": {"price": None, "photo": "AAE=", "cost": "1.50",
                                                            "added": "2026-01-02T00:00:00Z", "title": "coat"}}
