"""What was acknowledged is never lost: ``kill -9`` of the server during ingest (SQLite), and
``kill -9`` of redis-server during ingest (Redis with appendfsync always): every event whose
POST /events was answered 200 is in the store afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from groundrec.shared.events import open_store
from helpers import publish_demo


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(artifacts, events_url: str, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "groundrec.shared.cli", "serve", "--artifacts", str(artifacts),
                             "--port", str(port), "--events", events_url, "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.time() < deadline, "server did not start"
        time.sleep(0.2)


def _ingest(url: str, item: str, stop: threading.Event, acked: list[str], writer: int,
            refused: list[int] | None = None) -> None:
    """Post batches of 10 events with ids until stopped or the server is gone; record the
    ids of every batch answered 200."""
    n = 0
    with httpx.Client(base_url=url, timeout=5) as c:
        while not stop.is_set():
            ids = [f"w{writer}-{n}-{j}" for j in range(10)]
            n += 1
            try:
                r = c.post("/events", json={"events": [{"user_id": f"u{writer}", "item_id": item, "event_id": i}
                                                       for i in ids]})
            except httpx.TransportError:
                continue
            if r.status_code == 200:
                acked.extend(ids)
            elif refused is not None:
                refused.append(r.status_code)


def _load_then(url: str, item: str, fault, seconds: float = 1.5, refused: list[int] | None = None) -> list[str]:
    stop, acked = threading.Event(), []
    writers = [threading.Thread(target=_ingest, args=(url, item, stop, acked, w, refused)) for w in range(8)]
    for t in writers:
        t.start()
    time.sleep(seconds)
    fault()
    time.sleep(0.5)
    stop.set()
    for t in writers:
        t.join(10)
    return acked


def _stored_ids(events_url: str) -> set[str]:
    store = open_store(events_url)
    try:
        return {e.event_id for batch in store.scan() for e in batch}
    finally:
        store.close()


def test_kill_9_of_the_server_during_ingest_loses_no_acknowledged_event(tmp_path, tiny_vlm):
    """Two worker processes write one SQLite file (SQLite's locking between them): no refusal
    while both ingest, and nothing acknowledged lost when the whole server is killed."""
    demo = publish_demo(tmp_path, tiny_vlm())
    events_url = f"sqlite:///{tmp_path}/events.db"
    proc, url = _serve(demo["artifacts"], events_url, workers=2)
    refused: list[int] = []
    try:
        acked = _load_then(url, demo["histories"][0][0], lambda: os.killpg(proc.pid, signal.SIGKILL), refused=refused)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert len(acked) > 100 and refused == []  # it was ingesting at full rate when killed, refusing nothing
    stored = _stored_ids(events_url)
    assert set(acked) <= stored  # acknowledged <= stored: nothing acknowledged was lost


def test_kill_9_of_redis_during_ingest_loses_no_acknowledged_event(tmp_path, tiny_vlm, redis_server):
    redis_server.flush()
    demo = publish_demo(tmp_path, tiny_vlm())
    proc, url = _serve(demo["artifacts"], redis_server.url)
    try:
        acked = _load_then(url, demo["histories"][0][0], lambda: redis_server.stop(hard=True))
        redis_server.start()  # appendonly yes, appendfsync always: the AOF is replayed
        assert len(acked) > 100
        assert set(acked) <= _stored_ids(redis_server.url)
        # and the server recovers by itself: the next post succeeds
        r = httpx.post(url + "/events", json={"events": [{"user_id": "after", "item_id": demo["histories"][0][0]}]})
        assert r.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
