"""Live items' embeddings kept in the event store (online/live_vectors.py), on the real service:
a server encodes each live item once and caches it; a restart, or another server on the same
store, applies the live catalog from the cache without encoding, and serves the same answers;
a state the cache does not hold (a changed text) is encoded."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.shared import artifact
from groundrec.shared.events import open_store
from helpers import publish_demo, running


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("vectors"), tiny_vlm(), n_items=30)


def _cfg(pub, store, **kw) -> ServeConfig:
    return ServeConfig(artifacts=pub["artifacts"], events=store, reload_interval_s=3600, live_poll_s=0.1, **kw)


def _encoded(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(r"^groundrec_live_items_encoded_total (\S+)$", text, re.M).group(1))


def _search(url: str, text: str) -> list[tuple[str, float]]:
    r = httpx.post(url + "/search", json={"text": text, "k": 5})
    assert r.status_code == 200, r.text
    return [(i["item_id"], round(i["score"], 5)) for i in r.json()["items"]]


def _wait_cached(store_url: str, key: str, keys: list[tuple[str, int]]) -> dict:
    import time

    store, deadline = open_store(store_url), time.time() + 10
    try:
        while len(got := store.item_vectors(key, keys)) < len(keys):  # written in the background
            assert time.time() < deadline, f"cached {len(got)} of {len(keys)}"
            time.sleep(0.05)
        return got
    finally:
        store.close()


@pytest.mark.parametrize("compute", ["process", "thread"])
def test_a_restart_applies_the_live_catalog_from_the_cache_without_encoding(published, tmp_path, compute):
    store = f"sqlite:///{tmp_path}/events.db"
    items = [{"item_id": f"owl-{n}", "title": f"owl lamp {n}", "description": "A lamp shaped like an owl."}
             for n in range(4)]
    with running(create_app(_cfg(published, store, compute=compute))) as url:
        assert httpx.post(url + "/items", json={"items": items}).status_code == 200
        assert _encoded(url) == 4
        before = _search(url, "owl lamp 2")
        assert before[0][0] == "owl-2"
    version = artifact.current_version(published["artifacts"])
    cached = _wait_cached(store, f"{version}/fp32", [(f"owl-{n}", n + 1) for n in range(4)])
    assert all(np.frombuffer(v, np.float32).shape == (384,) for v in cached.values())

    with running(create_app(_cfg(published, store, compute=compute))) as url:  # the restart
        assert _search(url, "owl lamp 2") == before  # the same live items, the same answers
        assert _encoded(url) == 0  # every embedding came from the store
        r = httpx.patch(url + "/items/owl-1", json={"title": "owl clock"})  # a new text: encoded
        assert r.status_code == 200 and _encoded(url) == 1
        assert _search(url, "owl clock")[0][0] == "owl-1"


def test_an_apply_after_close_is_applied_and_not_cached(published, tmp_path):
    """A write that lands while the server stops is still applied; its embedding is just not kept."""
    from groundrec.online.events import Events
    from groundrec.online.live_vectors import LiveVectors
    from groundrec.online.serving import build_serving
    from groundrec.shared.live_items import LiveItem

    events = Events(ServeConfig(artifacts=published["artifacts"], events=f"sqlite:///{tmp_path}/events.db"),
                    serving=None)
    vid = artifact.current_version(published["artifacts"])
    serving = build_serving(ServeConfig(artifacts=published["artifacts"], events="none", compute="thread"), vid,
                            artifact.locate(published["artifacts"], vid))
    counted = []
    vectors = LiveVectors(events, "fp32", counted.append)
    vectors.apply(serving, [LiveItem("heron-1", {"title": "heron vase"}, whole=True, first_seen=1.0, seq=1)])
    vectors.close()  # writes what is queued
    assert counted == [1] and set(events.store().item_vectors(vectors.key(vid), [("heron-1", 1)])) == {("heron-1", 1)}
    vectors.apply(serving, [LiveItem("heron-2", {"title": "heron jug"}, whole=True, first_seen=2.0, seq=2)])
    assert counted == [1, 1] and serving.retriever.v.row_of.get("heron-2") is not None
    assert events.store().item_vectors(vectors.key(vid), [("heron-2", 2)]) == {}
    events.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "sqlite:///{tmp}/a-file/events.db"],
                         ids=["refused", "cannot-open"])
def test_a_store_that_does_not_answer_costs_an_encoding_not_the_apply(published, tmp_path, url):
    from groundrec.online.events import Events
    from groundrec.online.live_vectors import LiveVectors
    from groundrec.online.serving import build_serving
    from groundrec.shared.live_items import LiveItem

    (tmp_path / "a-file").write_text("not a folder")
    events = Events(ServeConfig(artifacts=published["artifacts"], events=url.format(tmp=tmp_path)), serving=None)
    vid = artifact.current_version(published["artifacts"])
    serving = build_serving(ServeConfig(artifacts=published["artifacts"], events="none", compute="thread"), vid,
                            artifact.locate(published["artifacts"], vid))
    vectors = LiveVectors(events, "fp32")
    assert vectors.cached(vid, [LiveItem("ibis-1", {"title": "ibis"}, whole=True, seq=1)]) == {}
    vectors.apply(serving, [LiveItem("ibis-1", {"title": "ibis bowl"}, whole=True, first_seen=1.0, seq=1)])
    vectors.close()
    assert serving.retriever.v.row_of.get("ibis-1") is not None  # applied, encoded here
