"""GET /items/{id}/similar and GET /popular on the real service (issue 33, part)."""

from __future__ import annotations

import json

import httpx
import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from helpers import publish_demo, running


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_vlm):
    pub = publish_demo(tmp_path_factory.mktemp("lists"), tiny_vlm())
    cfg = ServeConfig(artifacts=pub["artifacts"], compute="thread", events="none",
                      interactions=pub["interactions"], reload_interval_s=0.2)
    with running(create_app(cfg)) as url:
        yield url, pub


def test_similar_items_are_the_item_s_own_list_without_it(served):
    url, pub = served
    item = pub["histories"][0][0]
    r = httpx.get(f"{url}/items/{item}/similar", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 5 and item not in ids and body["recommendation_id"]
    as_history = httpx.post(url + "/recommend", json={"history": [item], "k": 5}).json()
    assert ids == [i["item_id"] for i in as_history["items"]]
    cat = httpx.get(f"{url}/items/{ids[0]}").json()["item"]["category"]
    same = httpx.get(f"{url}/items/{item}/similar", params={"k": 3, "filters": json.dumps({"category": cat})}).json()
    assert ids[0] in [i["item_id"] for i in same["items"]]  # a list, not an empty one: the item's own category
    assert all(httpx.get(f"{url}/items/{i['item_id']}").json()["item"]["category"] == cat for i in same["items"])


def test_popular_follows_the_counts_and_filters(served):
    url, pub = served
    counts: dict[str, int] = {}
    for h in pub["histories"]:
        for i in h:
            counts[i] = counts.get(i, 0) + 1
    body = httpx.get(f"{url}/popular", params={"k": 3}).json()
    got = [i["item_id"] for i in body["items"]]
    assert [counts.get(i, 0) for i in got] == sorted(counts.values(), reverse=True)[:3]
    assert body["fallback"] == "popular"


@pytest.mark.parametrize("path, params, status, says", [
    ("/items/no-such-item/similar", {}, 404, "no item"),
    ("/popular", {"k": 0}, 422, "k"),
    ("/popular", {"filters": "[1, 2]"}, 400, "JSON object"),
    ("/popular", {"filters": "{not json"}, 400, "JSON object"),
    ("/popular", {"filters": json.dumps({"nope": 1})}, 400, "unknown filter column"),
])
def test_bad_list_requests_get_a_4xx_naming_the_problem(served, path, params, status, says):
    url, _ = served
    r = httpx.get(url + path, params=params)
    assert r.status_code == status and says in r.json()["detail"]


def test_the_clients_ask_for_similar_and_popular(served):
    import asyncio

    from groundrec.online.client import AsyncClient, Client

    url, pub = served
    item = pub["histories"][1][0]
    with Client(url) as c:
        sim, pop = c.similar(item, k=4), c.popular(k=2)
    want = httpx.get(f"{url}/items/{item}/similar", params={"k": 4}).json()
    assert [i.item_id for i in sim.items] == [i["item_id"] for i in want["items"]] and sim.recommendation_id
    assert [i.item_id for i in pop.items] == [i["item_id"] for i in httpx.get(f"{url}/popular?k=2").json()["items"]]

    async def both():
        a = AsyncClient(url)
        try:
            return await a.similar(item, k=4), await a.popular(k=2, filters={"category": "dress"})
        finally:
            await a.aclose()

    asim, apop = asyncio.run(both())
    assert [i.item_id for i in asim.items] == [i.item_id for i in sim.items]
    with Client(url) as c:
        assert apop.items and all(c.item(i.item_id)["category"] == "dress" for i in apop.items)


def test_search_takes_max_per_like_recommend(served):
    url, _ = served
    body = {"text": "a striped dress", "k": 3, "with_fields": True}
    plain = httpx.post(url + "/search", json=body).json()["items"]
    limited = httpx.post(url + "/search", json={**body, "max_per": {"category": 1}}).json()["items"]
    cats = [httpx.get(f"{url}/items/{i['item_id']}").json()["item"]["category"] for i in limited]
    assert len(cats) == len(set(cats)) == 3
    assert len({httpx.get(f"{url}/items/{i['item_id']}").json()["item"]["category"] for i in plain}) < 3
