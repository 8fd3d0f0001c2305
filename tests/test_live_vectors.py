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
