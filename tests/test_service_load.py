"""Serving under concurrency: batched answers equal one-at-a-time answers, a full queue is
refused with 503 while probes answer, a client that has gone is not computed, and the
thread limits are in force in the server process. Behaviour, not timings."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import httpx
import pytest

from groundrec.online.client import LocalClient
from groundrec.online.config import ServeConfig
from groundrec.online.service import create_app
from groundrec.online.testing import running, serving
from helpers import publish_demo


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_vlm):
    return publish_demo(tmp_path_factory.mktemp("load"), tiny_vlm())


def _cfg(artifacts, **extra) -> ServeConfig:
    return ServeConfig(artifacts=artifacts, reload_interval_s=60, **extra)


def _ids_scores(body: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], round(i["score"], 4)) for i in body["items"]]


async def _concurrently(url: str, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        return await asyncio.gather(*(c.post(path, json=body) for path, body in requests))


@pytest.mark.parametrize("compute", ["process", "thread"])
def test_concurrent_requests_are_batched_and_equal_one_at_a_time(published, compute):
    local = LocalClient(published["artifacts"], batching=False)
    requests = []
    for h in published["histories"]:
        requests += [("/recommend", {"history": h, "k": 5}),
                     ("/recommend", {"history": h, "k": 4, "text": "yellow bag", "strategy": "multi_interest"})]
    requests += [("/search", {"text": t, "k": 3}) for t in ("red striped dress", "black bag", "green t-shirt")]
    requests += [("/recommend", {"history": published["histories"][0], "filters": {"no_such_column": 1}})]
    app = create_app(_cfg(published["artifacts"], batch_max_wait_ms=50, batch_max_size=64, compute=compute))
    with running(app) as url:
        responses = asyncio.run(_concurrently(url, requests * 3))
        stats = app.state.batcher.stats
    assert stats.batches < stats.items, "concurrent requests were never scored together"
    for (path, body), r in zip(requests * 3, responses):
        if "filters" in body:  # one bad request in a batch gets its own 400; the others are answered
            assert r.status_code == 400 and "no_such_column" in r.json()["detail"]
            continue
        assert r.status_code == 200, r.text
        alone = (local.search(body["text"], k=body["k"]) if path == "/search" else
                 local.recommend(body["history"], **{k: v for k, v in body.items() if k != "history"}))
        assert _ids_scores(r.json()) == [(i.item_id, round(i.score, 4)) for i in alone.items]


def test_full_queue_is_refused_at_once_while_probes_answer(published):
    # One batch at a time, held in its compute call until the test lets it go (a gate around the
    # real function: the order of events is fixed, not raced), room for 2 waiting requests.
    import threading

    app = create_app(_cfg(published["artifacts"], batch_max_size=1, max_queue=2))
    body = {"history": published["histories"][0], "k": 5}
    gate, entered = threading.Event(), threading.Event()
    with running(app) as url:
        batcher = app.state.batcher
        compute = batcher.fn
        batcher.fn = lambda items: (entered.set(), gate.wait(30))[1] and compute(items)

        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                posts = [asyncio.ensure_future(c.post("/recommend", json=body))]
                deadline = time.monotonic() + 30
                while not entered.is_set():  # the first one is being computed (held): the queue is empty
                    assert time.monotonic() < deadline, "the first request was never computed"
                    await asyncio.sleep(0.02)
                posts += [asyncio.ensure_future(c.post("/recommend", json=body)) for _ in range(11)]
                deadline = time.monotonic() + 30
                while sum(p.done() for p in posts) < 9 or batcher.depth < 2:  # one computing, two waiting
                    assert time.monotonic() < deadline, ([p.done() for p in posts], batcher.depth)
                    await asyncio.sleep(0.02)
                started = time.perf_counter()
                health = await c.get("/healthz")
                health_s = time.perf_counter() - started
                gate.set()
                return await asyncio.gather(*posts), health, health_s

        try:
            responses, health, health_s = asyncio.run(go())
        finally:
            gate.set()
        metrics = httpx.get(url + "/metrics").text
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 3 and codes.count(503) == 9, codes
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after") == "1" and "retry later" in r.json()["detail"] for r in shed)
    assert health.status_code == 200 and health_s < 2  # the probe did not wait behind the held batch
    assert re.search(r"^groundrec_shed_total (\d+)", metrics, re.M).group(1) == "9"


def test_a_request_whose_client_left_is_not_computed(published):
    # a window long enough that the request is still waiting in it when its client leaves, on a
    # loaded machine too (the server must have read the body by then, or it is never queued)
    app = create_app(_cfg(published["artifacts"], batch_max_wait_ms=4000, batch_max_size=64))
    with running(app) as url:
        host, port = url.removeprefix("http://").split(":")
        payload = b'{"history": ["demo-0001"], "k": 5}'
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
            time.sleep(1.0)  # queued, waiting for its batch to fill
        stats, deadline = app.state.batcher.stats, time.monotonic() + 20
        while stats.dropped_gone == 0:  # counted once its batch window has passed
            assert time.monotonic() < deadline, "the request of a client that left was not dropped"
            time.sleep(0.1)
        metrics = httpx.get(url + "/metrics").text
    assert stats.dropped_gone == 1 and stats.items == 0
    assert "groundrec_client_gone_total 1.0" in metrics


def test_thread_limits_apply_in_the_server_process(published, tmp_path):
    with serving(published["artifacts"], timeout=60) as server:
        metrics = httpx.get(server.url + "/metrics").text
    pools = dict(re.findall(r'^groundrec_compute_threads\{pool="(\w+)"\} (\S+)$', metrics, re.M))
    assert pools.get("faiss") == "1.0" and pools.get("blas") == "1.0", pools


def test_thread_limits_apply_in_the_batch_worker_that_scores(published):
    # compute: thread: the worker thread runs FAISS, whose OpenMP thread count is per thread;
    # 3 is the default of no thread on this 2-core machine, so only a limit set there gives it.
    import faiss

    app = create_app(_cfg(published["artifacts"], compute="thread", compute_threads=3))
    with running(app) as url:
        in_worker = app.state.batcher._pool.submit(faiss.omp_get_max_threads).result()
        metrics = httpx.get(url + "/metrics").text
    assert in_worker == 3
    pools = dict(re.findall(r'^groundrec_compute_threads\{pool="(\w+)"\} (\S+)$', metrics, re.M))
    assert pools.get("faiss") == "3.0", pools
