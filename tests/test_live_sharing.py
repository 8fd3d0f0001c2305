"""A write group's live items encoded half by the standby compute process
(online/live_sharing.py): the embeddings the primary applies are its own encoding of the same
texts, a busy standby leaves its share to the primary, and both processes then serve the items."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from groundrec.online.compute import RemoteServing
from groundrec.online.config import ServeConfig
from groundrec.online import live_sharing
from groundrec.online.live_sharing import encoded_vectors
from groundrec.online.schemas import UserQuery
from groundrec.online.serving import build_serving
from groundrec.shared import artifact
from groundrec.shared.live_items import LiveItem
from helpers import publish_demo, wait_for_standby


@pytest.fixture(scope="module")
def remote(tmp_path_factory, tiny_vlm):
    pub = publish_demo(tmp_path_factory.mktemp("sharing"), tiny_vlm(), n_items=40)
    vid = artifact.current_version(pub["artifacts"])
    path = artifact.locate(pub["artifacts"], vid)
    cfg = ServeConfig(artifacts=pub["artifacts"], events="none", compute_standby=True)
    serving = RemoteServing.start(cfg, vid, path)
    wait_for_standby(serving, 120)
    local = build_serving(ServeConfig(artifacts=pub["artifacts"], events="none", compute="thread"), vid, path)
    yield serving, local
    serving.close()


def _items(prefix: str, n: int, seq0: int) -> list[LiveItem]:
    return [LiveItem(f"{prefix}-{i}", {"title": f"{prefix} wombat kettle {'x' * i}", "description": "A kettle."},
                     whole=True, first_seen=float(seq0 + i), updated=float(seq0 + i), seq=seq0 + i)
            for i in range(n)]


def _top(process, text: str) -> str:
    _, ids, _ = process.call("answer", [UserQuery(text=text, k=3)])[0]  # (JSON, item ids, version)
    return ids[0]


def test_the_standby_encodes_half_and_both_processes_serve_the_items(remote):
    serving, local = remote
    items = _items("shared", 6, 1)
    texts = serving.process.call("live_texts", (items, None))
    assert sorted(texts) == sorted(i.item_id for i in items)  # every new item's text, none applied yet
    vectors = encoded_vectors(serving, items, None)
    assert sorted(vectors) == sorted(texts)
    expected = local.encode([texts[i] for i in sorted(texts)])
    assert np.allclose(np.stack([vectors[i] for i in sorted(texts)]), expected, atol=1e-5)
    # the primary's texts are what it then applies: the whole write path, both processes
    known = serving.apply_live((items, None))
    assert sorted(known) == sorted(texts)
    assert serving.process.call("live_texts", (items, None)) == {}  # applied: nothing left to embed
    for process in (serving.process, serving.standby):
        assert _top(process, texts["shared-4"]) == "shared-4"


def test_a_busy_standby_leaves_its_share_to_the_primary(remote):
    serving, local = remote
    items = _items("busy", 4, 100)
    standby = serving.standby
    assert standby._lock.acquire(timeout=10)  # a call in flight (as a new standby applying the live catalog)
    try:
        vectors = encoded_vectors(serving, items, None)
    finally:
        standby._lock.release()
    assert len(vectors) == 2  # the primary's half only, without waiting for the standby
    serving.apply_live((items, None))  # the primary's apply encodes the rest
    for process in (serving.process, serving.standby):
        assert _top(process, "busy wombat kettle xxx") == "busy-3"


def test_one_text_is_left_to_the_apply_and_a_standby_told_not_to_encode_encodes_nothing(remote, monkeypatch):
    serving, local = remote
    assert encoded_vectors(serving, _items("alone", 1, 200), None) == {}
    monkeypatch.setattr(serving, "limits", serving.limits.model_copy(update={"standby_encodes": False}))
    standby = serving.standby
    assert standby._lock.acquire(timeout=10)  # were the standby asked, this would be its share's BlockingIOError
    try:
        vectors = encoded_vectors(serving, _items("none", 3, 300), None)
    finally:
        standby._lock.release()
    assert len(vectors) == 3  # all by the primary


def test_request_batches_are_scored_between_the_primarys_encoding_calls(remote, monkeypatch):
    """A feed's texts are encoded by the primary a few at a time: requests waiting for it are
    answered while the feed is still being encoded, not after it."""
    serving, _ = remote
    monkeypatch.setattr(serving, "limits", serving.limits.model_copy(update={"standby_encodes": False}))
    # the gap between two calls, long enough that a waiting thread wakes in it on a loaded machine
    monkeypatch.setattr(live_sharing, "PAUSE_S", 0.05)
    assert serving.limits.live_encode_chunk == 8  # the default
    items = _items("feed", 64, 400)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (encoded_vectors(serving, items, None), done.set()))
    answered = 0
    worker.start()
    while not done.is_set():
        _top(serving.process, "wombat kettle")
        answered += not done.is_set()
    worker.join()
    assert answered >= 3, answered  # one long call would let at most one answer through meanwhile

