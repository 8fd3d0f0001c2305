"""What the items API acknowledged is never lost: ``kill -9`` of a two-worker server during
upserts (SQLite), then a new server serves every acknowledged item (online/catalog.py)."""

from __future__ import annotations

import threading
import time

import httpx

from groundrec.online.testing import serving
from groundrec.shared.events import open_store
from helpers import publish_demo


def _upsert(url: str, stop: threading.Event, acked: list[str], writer: int) -> None:
    n = 0
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            item = f"w{writer}-{n}"
            n += 1
            try:
                r = c.put(f"/items/{item}", json={"title": f"kill test item {item}", "category": "raincoat"})
            except httpx.TransportError:
                continue
            if r.status_code == 200:
                acked.append(item)


def test_kill_9_during_upserts_loses_no_acknowledged_item(tmp_path, tiny_vlm):
    demo = publish_demo(tmp_path, tiny_vlm())
    events_url = f"sqlite:///{tmp_path}/events.db"
    stop, acked = threading.Event(), []
    with serving(demo["artifacts"], "--events", events_url, "--workers", "2", timeout=90) as server:
        writers = [threading.Thread(target=_upsert, args=(server.url, stop, acked, w)) for w in range(8)]
        for t in writers:
            t.start()
        deadline = time.monotonic() + 60  # a count reached, not a time: a loaded machine is slower
        while len(acked) <= 20:
            assert time.monotonic() < deadline, f"{len(acked)} upserts acknowledged in 60 s"
            time.sleep(0.02)
        server.kill()
        time.sleep(0.5)
        stop.set()
        for t in writers:
            t.join(15)
    assert len(acked) > 20  # it was taking upserts when killed
    store = open_store(events_url)
    try:
        stored = {c.item_id for c in store.item_changes(limit=1_000_000)}
    finally:
        store.close()
    assert set(acked) <= stored
    with serving(demo["artifacts"], "--events", events_url, timeout=90) as server:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            missing = [i for i in acked if c.get(f"/items/{i}").status_code != 200]
            assert missing == []
            found = c.post("/search", json={"text": f"kill test item {acked[-1]}", "k": 3}).json()
            assert acked[-1] in [i["item_id"] for i in found["items"]]
