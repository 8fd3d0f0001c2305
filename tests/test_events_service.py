"""The events API and recommendations by user id on the real HTTP service, over SQLite and a
real redis-server: what is posted is durable, shows in that user's very next list, can be
erased, and a store that goes away costs only what needs it."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from groundrec.online.client import Client
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.shared.events import Event, open_store
from groundrec.shared.events.export import export
from groundrec.shared.tables import read_table
from helpers import publish_demo, running


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("events"), tiny_vlm())


@pytest.fixture(params=["sqlite", "redis"])
def events_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    server = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


def _cfg(published, events_url, **extra) -> ServeConfig:
    return ServeConfig(artifacts=published["artifacts"], events=events_url, reload_interval_s=0.2, **extra)


def _ids(reply) -> list[str]:
    return [i["item_id"] for i in reply.json()["items"]]


def test_posted_events_are_durable_and_shape_that_user_s_next_list(published, events_url):
    history = published["histories"][0]
    with running(create_app(_cfg(published, events_url))) as url:
        cold = httpx.post(url + "/recommend", json={"user_id": "shopper", "k": 5})
        assert cold.status_code == 200 and cold.json()["fallback"] == "popular"  # unknown user: popular
        events = [{"user_id": "shopper", "item_id": item, "timestamp": 1000 + n, "event_id": f"e{n}"}
                  for n, item in enumerate(history)]
        r = httpx.post(url + "/events", json={"events": [*events, {"user_id": "shopper", "item_id": "not-yet-sold", "timestamp": 1500}]})
        assert r.status_code == 200 and r.json() == {"accepted": len(history) + 1, "duplicates": 0, "unknown_items": 1,
                                                     "unattributed": 0}
        by_user = httpx.post(url + "/recommend", json={"user_id": "shopper", "k": 5})
        sent = httpx.post(url + "/recommend", json={"history": history, "k": 5})
        assert by_user.status_code == 200 and by_user.json()["fallback"] is None
        assert _ids(by_user) == _ids(sent) and not set(_ids(by_user)) & set(history)  # purchases: weight 1, as sent
        # a stored id the version lacks is not echoed (a read-only key would read the user's items there); a sent one is
        assert by_user.json()["unknown_ids"] == [] and httpx.post(url + "/recommend", json={
            "user_id": "shopper", "history": ["sent-not-sold"], "k": 5}).json()["unknown_ids"] == ["sent-not-sold"]
        httpx.post(url + "/events", json={"events": [{"user_id": "only-unknown", "item_id": "secret-item"}]})
        for other in ({"strategy": "recency"}, {"text": "red"}, {}):  # every way a profile is made, and none made
            for who in ("shopper", "only-unknown"):
                answer = httpx.post(url + "/recommend", json={"user_id": who, "k": 3, **other}).json()
                assert answer["unknown_ids"] == [], (who, other, answer)
        # a retried request stores nothing twice
        again = httpx.post(url + "/events", json={"events": events[:2]})
        assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 2
        # one more event moves the very next list; a batch mixes users by id and by history
        httpx.post(url + "/events", json={"events": [{"user_id": "shopper", "item_id": _ids(by_user)[0],
                                                      "type": "cart", "timestamp": 5000}]})
        after = httpx.post(url + "/recommend", json={"user_id": "shopper", "k": 5})
        assert _ids(by_user)[0] not in _ids(after)
        batch = httpx.post(url + "/recommend", json={"batch": [{"user_id": "shopper", "k": 5}, {"history": history, "k": 5}]})
        assert [[i["item_id"] for i in r["items"]] for r in batch.json()["results"]] == [_ids(after), _ids(sent)]
    store = open_store(events_url)
    assert [i for i, *_ in store.history("shopper", 100)][-1] == _ids(by_user)[0]
    assert store.history("shopper", 100)[-1][2] == 0.5  # the cart's weight from the server's event_types
    store.close()


def test_bad_events_get_4xx_naming_the_problem_and_store_nothing(published, events_url):
    ok = {"user_id": "u", "item_id": "i"}
    with running(create_app(_cfg(published, events_url, max_events=3))) as url:
        for body, words in (({"events": [ok] * 4}, "max_events=3"),
                            ({"events": [{**ok, "type": "like"}]}, "'like' is not one of"),
                            ({"events": [{"item_id": "i"}]}, "user_id"),
                            ({"events": [{**ok, "user_id": "x" * 300}]}, "user_id"),
                            ({"events": [{**ok, "item_id": "a\x1fb"}]}, "item_id"),  # no control characters in ids
                            ({"events": [{**ok, "item_id": "a\u2028b"}]}, "item_id"),  # nor line separators
                            ({"events": [{**ok, "timestamp": -5}]}, "timestamp"),
                            # a clock two days ahead: it would be the newest event for ever (the job's
                            # window, the gate's cutoff and the online report all anchor there)
                            ({"events": [ok, {**ok, "timestamp": time.time() + 2 * 86_400}]}, "past the server's clock"),
                            ({"events": [{**ok, "timestamp": time.time() * 1000}]}, "not milliseconds"),
                            ({"events": [{**ok, "weight": "heavy"}]}, "weight"),
                            ({"events": []}, "events"),
                            ({"events": [ok], "extra": 1}, "extra")):
            r = httpx.post(url + "/events", json=body)
            assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    store = open_store(events_url)
    assert store.count() == 0
    store.close()


def test_a_stored_history_longer_than_max_history_is_all_seen_as_a_sent_one_is(published, events_url):
    """By user_id the server read only the latest max_history events: items bought before them
    could be recommended again (eval excludes a whole history), and unknown items took places
    of the profile's known ones."""
    history = published["histories"][0][:5]
    with running(create_app(_cfg(published, events_url, max_history=3))) as url:
        events = [{"user_id": "long", "item_id": item, "timestamp": 1000 + n} for n, item in enumerate(history)]
        events += [{"user_id": "long", "item_id": f"gone-{n}", "timestamp": 2000 + n} for n in range(2)]
        assert httpx.post(url + "/events", json={"events": events}).status_code == 200
        k = 40  # a list that would reach the items bought first
        by_user = httpx.post(url + "/recommend", json={"user_id": "long", "k": k}).json()
        sent = httpx.post(url + "/recommend", json={"history": history + ["gone-0", "gone-1"], "k": k}).json()
        assert [i["item_id"] for i in by_user["items"]] == [i["item_id"] for i in sent["items"]]
        assert not {i["item_id"] for i in by_user["items"]} & set(history)
        assert by_user["history_ignored"] == sent["history_ignored"] == 2
    with pytest.raises(ValueError, match="max_seen=2 is below max_history=3"):
        _cfg(published, events_url, max_history=3, max_seen=2)


def test_delete_user_erases_them_and_nothing_else(published, events_url, tmp_path):
    with running(create_app(_cfg(published, events_url))) as url:
        item = published["histories"][0][0]
        httpx.post(url + "/events", json={"events": [{"user_id": u, "item_id": item, "event_id": f"{u}-1"}
                                                     for u in ("forget-me", "keep-me")]})
        r = httpx.delete(url + "/users/forget-me")
        assert r.status_code == 200 and r.json() == {"user_id": "forget-me", "deleted_events": 1}
        assert httpx.post(url + "/recommend", json={"user_id": "forget-me"}).json()["fallback"] == "popular"
        assert httpx.post(url + "/recommend", json={"user_id": "keep-me"}).json()["fallback"] is None
        httpx.post(url + "/events", json={"events": [{"user_id": "shop/42", "item_id": item}]})
        slashed = Client(url).delete_user("shop/42")  # a '/' in a user id: %2F reaches the server decoded
        assert slashed == {"user_id": "shop/42", "deleted_events": 1}
        stored = open_store(events_url)  # an id the rule of before stored (a C1 control: refused for new events now)
        stored.add([Event("old\x85id", item, time.time(), "view", 0.2, "old-1")])
        stored.close()
        assert httpx.post(url + "/events", json={"events": [{"user_id": "new\x85id", "item_id": item}]}).status_code == 422
        assert Client(url).delete_user("old\x85id") == {"user_id": "old\x85id", "deleted_events": 1}
    store = open_store(events_url)
    assert {e.user_id for batch in store.scan() for e in batch} == {"keep-me"}
    export(store, tmp_path / "export")
    store.close()
    assert set(read_table(tmp_path / "export").column("user_id").to_pylist()) == {"keep-me"}  # nor in the next export


def test_erasures_waiting_for_lists_to_land_hold_no_thread_the_other_routes_need(published, events_url, monkeypatch):
    """An erasure waits between its two passes (``ImpressionLog.settle_s``): in the shared
    thread pool 80 of them at once held every thread, and a GET /items waited for the first of
    them to end. The wait is made 5.5 s long here (the grace 5 s), so a GET that waits for a
    thread takes about 5 s, and one answered at once has a wide margin on a slow machine."""
    from concurrent.futures import ThreadPoolExecutor

    from groundrec.online import impressions

    monkeypatch.setattr(impressions, "WRITE_GRACE_S", 5.0)
    with running(create_app(_cfg(published, events_url))) as url:
        item = published["histories"][0][0]
        with ThreadPoolExecutor(80) as pool, httpx.Client(timeout=60) as client:
            erasures = [pool.submit(client.delete, f"{url}/users/gone-{n}") for n in range(80)]
            store, deadline = open_store(events_url), time.monotonic() + 60
            try:  # every first pass done: they are all waiting now (a loaded machine takes its time)
                while len(store.erasures()) < 80:
                    assert time.monotonic() < deadline, "the 80 erasures' first passes did not end in 60 s"
                    time.sleep(0.05)
            finally:
                store.close()
            started = time.monotonic()
            assert client.get(f"{url}/items/{item}").status_code == 200
            waited = time.monotonic() - started
            assert all(e.result().status_code == 200 for e in erasures)
        assert waited < 2.5, f"the GET waited {waited:.1f} s for a thread the erasures held"



def test_clicks_waiting_for_other_workers_lists_hold_no_thread_the_other_routes_need(published, events_url,
                                                                                     monkeypatch):
    """A click whose list another worker may still be writing is read again until it lands
    (``Events._await_landing``): the wait slept in a pool thread, so 40 requests naming fresh ids
    that are no list of ours stalled every route that needs one. The wait is made 10 s here, so
    a GET that waits for a thread takes about 10 s, and one answered at once has a wide margin
    on a slow machine."""
    from concurrent.futures import ThreadPoolExecutor

    from groundrec.online import events, impressions

    monkeypatch.setattr(impressions, "WRITE_GRACE_S", 10.0)
    monkeypatch.setattr(events, "MAX_LANDING_WAIT_S", 10.0)
    with running(create_app(_cfg(published, events_url))) as url:
        item = published["histories"][0][0]
        fresh = lambda n: f"{int(time.time() * 1000):012x}{n:020x}"  # noqa: E731  (an id of now: it may be landing)
        with ThreadPoolExecutor(60) as pool, httpx.Client(timeout=60) as client:
            clicks = [pool.submit(client.post, f"{url}/events", json={"events": [
                {"user_id": f"u{n}", "item_id": item, "recommendation_id": fresh(n)}]}) for n in range(60)]
            time.sleep(1.0)  # they are all waiting now
            started = time.monotonic()
            assert client.get(f"{url}/items/{item}").status_code == 200
            waited = time.monotonic() - started
            assert all(c.result().json()["unattributed"] == 1 for c in clicks)  # no such list: stored without it
        assert waited < 5, f"the GET waited {waited:.1f} s for a thread the clicks held"

def test_writes_need_the_api_key_and_the_read_key_only_reads(published, tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDREC_API_KEY", "write-secret")
    monkeypatch.setenv("GROUNDREC_READ_API_KEY", "read-secret")
    event = {"events": [{"user_id": "u", "item_id": published["histories"][0][0]}]}
    with running(create_app(_cfg(published, f"sqlite:///{tmp_path}/e.db"))) as url:
        read, write = {"X-API-Key": "read-secret"}, {"X-API-Key": "write-secret"}
        assert httpx.post(url + "/events", json=event).status_code == 401
        r = httpx.post(url + "/events", json=event, headers=read)
        assert r.status_code == 401 and "writes need the API key" in r.json()["detail"]
        assert httpx.delete(url + "/users/u", headers=read).status_code == 401
        assert httpx.post(url + "/events", json=event, headers=write).status_code == 200
        assert httpx.post(url + "/recommend", json={"user_id": "u"}, headers=read).status_code == 200
        assert httpx.post(url + "/recommend", json={"user_id": "u"}, headers={"X-API-Key": "wrong"}).status_code == 401
        # the page's view of a user by id lists their stored history: the API key's, not the read key's
        assert httpx.get(url + "/ui/user", params={"user_id": "u"}, headers=read).status_code in (303, 401)
        assert httpx.get(url + "/ui/user", params={"user_id": "u"}, headers=write).status_code == 200
        assert httpx.get(url + "/ui/user", params={"h": published["histories"][0][0]}, headers=read).status_code == 200
        assert httpx.delete(url + "/users/u", headers=write).json()["deleted_events"] == 1
    # Under a root path (uvicorn's --root-path: a proxy strips the prefix, the scope's path holds
    # it again) the guard classifies the route that will run: the read key wrote (the scope's
    # path /api/events was no write path).
    with running(create_app(_cfg(published, f"sqlite:///{tmp_path}/e.db")), root_path="/api") as url:
        assert httpx.post(url + "/events", json=event, headers=read).status_code == 401
        assert httpx.put(url + "/items/new", json={"title": "x"}, headers=read).status_code == 401
        assert httpx.get(url + "/ui/user", params={"user_id": "u"}, headers=read).status_code in (303, 401)
        assert httpx.post(url + "/events", json=event, headers=write).status_code == 200
        assert httpx.post(url + "/recommend", json={"user_id": "u"}, headers=read).status_code == 200
        page = httpx.get(url + "/ui/search")  # no key: sent to sign in, under the prefix
        assert page.status_code == 303 and page.headers["location"] == "/api/ui/login"
        # the page's own links, images and forms stay under the prefix too (they began at "/": the sign-in form
        # posted to /ui/login, past the proxy, and no thumbnail loaded)
        from urllib.parse import urljoin

        form = httpx.get(url + "/ui/login").text
        base = re.search(r'<base href="([^"]*)">', form).group(1)
        assert base == "/api/" and urljoin(base, re.search(r'action="([^"]*)"', form).group(1)) == "/api/ui/login"
        home = httpx.get(url + "/", headers=write).text
        links = re.findall(r'(?:href|src|action)="([^"#:]+)"', home)
        assert links and all(urljoin(base, link).startswith("/api/") for link in links)
        assert any(urljoin(base, link).endswith("/thumbnail") for link in links)
        # a key typed on the page with a character no key holds: the form again, never a 500
        r = httpx.post(url + "/ui/login", data={"key": "\u20ac-secret"})
        assert r.status_code == 303 and r.headers["location"].startswith("/api/ui/login?error=")
    monkeypatch.setenv("GROUNDREC_API_KEY", "cl\u00e9")  # latin-1, but no client or cookie carries it
    with pytest.raises(Exception, match="printable ASCII"):
        create_app(_cfg(published, f"sqlite:///{tmp_path}/e.db"))
    monkeypatch.delenv("GROUNDREC_API_KEY")
    with pytest.raises(Exception, match="set the API key too"):
        create_app(_cfg(published, f"sqlite:///{tmp_path}/e.db"))


def test_an_unreachable_store_costs_only_what_needs_it_and_heals(published, redis_server):
    redis_server.flush()
    history = published["histories"][0]
    with running(create_app(_cfg(published, redis_server.url))) as url:
        event = {"events": [{"user_id": "u", "item_id": history[0]}]}
        assert httpx.post(url + "/events", json=event).status_code == 200
        redis_server.stop()
        try:
            r = httpx.post(url + "/events", json=event)
            assert r.status_code == 503 and "event store is unavailable" in r.json()["detail"]
            r = httpx.post(url + "/recommend", json={"user_id": "u"})
            assert r.status_code == 503 and "a history sent in the request still works" in r.json()["detail"]
            assert httpx.post(url + "/recommend", json={"history": history}).status_code == 200
        finally:
            redis_server.start()
        assert httpx.post(url + "/events", json=event).status_code == 200  # by itself, no restart
        assert httpx.post(url + "/recommend", json={"user_id": "u"}).json()["fallback"] is None


def test_popularity_follows_the_events_of_the_window(published, events_url):
    """The popular fallback (and the prior) come from the store's recent events, refreshed in
    the background: an item bought by many now leads an unknown user's list; events older
    than the window do not count."""
    import time

    items = published["histories"][1]
    hot, old = items[-1], items[0]
    cfg = _cfg(published, events_url, popularity_window_days=1.0, popularity_refresh_s=0.1)
    with running(create_app(cfg)) as url:
        now = time.time()
        httpx.post(url + "/events", json={"events": [{"user_id": f"b{n}", "item_id": hot, "timestamp": now}
                                                     for n in range(5)]
                                          + [{"user_id": f"o{n}", "item_id": old, "timestamp": now - 3 * 86_400}
                                             for n in range(50)]})
        deadline = time.time() + 10
        while _ids(httpx.post(url + "/recommend", json={"user_id": "newcomer", "k": 3}))[0] != hot:
            assert time.time() < deadline, "popularity did not follow the events"
            time.sleep(0.1)
        # first although the old item has ten times its events: those are outside the window
        assert httpx.post(url + "/recommend", json={"user_id": "newcomer", "k": 3}).json()["fallback"] == "popular"
