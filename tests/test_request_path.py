"""The request path's parts without a server: the guard, the hot routes and the micro-batcher,
each driven through ASGI (httpx's in-process transport) or asyncio directly."""

import asyncio
import logging
import threading

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict

from groundrec.online.batching import MicroBatcher
from groundrec.online.errors import Overloaded, Unavailable
from groundrec.online.guard import Guard
from groundrec.online.hotpath import HotRoutes
from groundrec.online.metrics import ServiceMetrics


async def _fails(scope, receive, send):
    raise KeyError("a bug")


async def _ok(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(app, method="GET", path="/x", **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.request(method, path, **kw)
    return asyncio.run(go())


def _guard(app, **kw) -> Guard:
    return Guard(app, metrics=ServiceMetrics(), **{"api_key": None, "max_body_bytes": 100, "body_timeout_s": 1.0, **kw})


def test_a_bug_is_a_500_with_a_request_id_that_the_log_holds_with_its_traceback(caplog):
    with caplog.at_level(logging.ERROR, logger="groundrec.serve"):
        r = _call(_guard(_fails))
    assert r.status_code == 500
    request_id = r.json()["request_id"]
    assert len(request_id) == 16 and request_id in r.json()["detail"] and "KeyError" in r.json()["detail"]
    record = next(rec for rec in caplog.records if request_id in rec.getMessage())
    assert record.exc_info and record.exc_info[0] is KeyError


def test_a_bug_under_a_fastapi_route_is_the_same_json_500_logged_once(tmp_path, caplog):
    """The cold routes (/items/{id}, /popular, ...) are FastAPI's: a bug there was Starlette's
    text/plain "Internal Server Error", with no request id."""
    from fastapi import Request

    from groundrec.online.config import ServeConfig
    from groundrec.online.service import create_app

    app = create_app(ServeConfig(artifacts=tmp_path, events="none"))

    @app.api.get("/boom")
    def boom():
        raise KeyError("bug")

    with caplog.at_level(logging.ERROR, logger="groundrec.serve"):
        r = _call(app, path="/boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    request_id = r.json()["request_id"]
    assert request_id in r.json()["detail"] and "KeyError" in r.json()["detail"]
    logged = [rec for rec in caplog.records if "unhandled error" in rec.getMessage()]
    assert len(logged) == 1 and request_id in logged[0].getMessage() and logged[0].exc_info[0] is KeyError

    @app.api.post("/cut")
    async def cut(request: Request):
        await request.body()

    async def cut_off():  # a client that leaves mid-body: no bug, nothing logged
        sent = []

        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": "/cut", "headers": [(b"content-length", b"10")],
                   "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
                   "http_version": "1.1", "raw_path": b"/cut"}, receive, send)
        return sent

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="groundrec.serve"):
        asyncio.run(cut_off())
    assert not [rec for rec in caplog.records if "unhandled error" in rec.getMessage()]


def test_guard_refuses_a_wrong_key_and_a_large_body_with_reasons():
    keyed = _guard(_ok, api_key="s3cret")
    assert _call(keyed).status_code == 401
    assert _call(keyed, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert _call(keyed, path="/healthz").status_code == 200  # probes stay open
    r = _call(_guard(_ok), "POST", content=b"x" * 101)
    assert r.status_code == 413 and "max_body_bytes=100" in r.json()["detail"]


def test_a_body_dripped_in_chunks_is_refused_once_the_whole_body_is_late():
    """``body_timeout_s`` bounds the whole body: chunks each within it, together beyond it, get
    a 408 (a slow client cannot hold a request open by dripping bytes)."""
    async def drip():
        for _ in range(4):
            await asyncio.sleep(0.4)  # each chunk well within the 1 s; the body not
            yield b"x"

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_guard(_ok)), base_url="http://t") as c:
            return await c.post("/x", content=drip())
    r = asyncio.run(go())
    assert r.status_code == 408 and "not received within 1 s" in r.json()["detail"]


def test_guard_sheds_the_listed_paths_when_overloaded_with_retry_after():
    g = _guard(_ok, overloaded=lambda: True, shed_paths=frozenset({"/recommend"}), retry_after_s=3)
    r = _call(g, "POST", "/recommend", json={})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert _call(g, "GET", "/healthz").status_code == 200  # other paths are not shed
    assert g.metrics.shed._value.get() == 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


def test_hot_routes_validate_from_bytes_and_pass_the_rest_on():
    seen = []

    async def handler(body, receive):
        seen.append(body)
        return 200, b'{"twice": %d}' % (2 * body.n), []

    app = HotRoutes(_ok, routes={"/hot": (_Body, handler)})
    assert _call(app, "POST", "/hot", json={"n": 4}).json() == {"twice": 8}
    bad = _call(app, "POST", "/hot", json={"n": "four", "extra": 1})
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["errors"]] == [["body", "n"], ["body", "extra"]]
    assert _call(app, "GET", "/hot").text == "ok"  # not a POST: the app behind
    assert _call(app, "POST", "/other", json={"n": 4}).text == "ok"  # not a hot path: the app behind
    assert len(seen) == 1


def test_hot_routes_read_json_whatever_content_type_it_declares():
    """``curl -d`` declares application/x-www-form-urlencoded: the JSON is read all the same,
    and a body that is not JSON is a 422 naming the problem, not handed to another parser."""
    async def handler(body, receive):
        return 200, b'{"n": %d}' % body.n, []

    app = HotRoutes(_ok, routes={"/hot": (_Body, handler)})
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x",
                         "application/json; charset=utf-8", None):
        headers = {"content-type": content_type} if content_type else {}
        r = _call(app, "POST", "/hot", content=b'{"n": 4}', headers=headers)
        assert (r.status_code, r.json()) == (200, {"n": 4}), content_type
    r = _call(app, "POST", "/hot", content=b"n=4", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and r.json()["detail"].startswith("body: Invalid JSON: expected ident at line 1 column 2")


def test_micro_batcher_batches_answers_in_order_and_refuses_beyond_its_queue():
    calls = []

    def fn(items):
        calls.append(list(items))
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    async def go():
        b = MicroBatcher(fn, max_batch=8, max_wait_s=0.05, max_queue=4)
        b.start()
        jobs = [b.enqueue(i) for i in range(4)]
        with pytest.raises(Overloaded, match="max_queue=4"):
            b.enqueue(99)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await b.stop()
        return results, b.stats

    results, stats = asyncio.run(go())
    assert calls == [[0, 1, 2, 3]]  # one call for the four waiting
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], ValueError) and isinstance(results[3], ValueError)  # only those callers
    assert stats.batches == 1 and stats.items == 4


def test_micro_batcher_drops_a_request_whose_caller_has_gone():
    calls = []

    async def go():
        b = MicroBatcher(lambda items: calls.append(list(items)) or items, max_batch=8, max_wait_s=0.05)
        b.start()
        gone, kept = b.enqueue("gone"), b.enqueue("kept")
        gone.cancel()
        result = await kept
        await b.stop()
        return result, b.stats

    result, stats = asyncio.run(go())
    assert result == "kept" and calls == [["kept"]] and stats.dropped_gone == 1


def test_callers_gone_stop_counting_against_the_queue_and_a_stop_answers_every_waiting_caller():
    """Requests whose clients left during a long batch stayed in the count until the batch
    ended: every new request was refused (503) with no live one waiting. A failing metric
    ended the batcher's loop (every later request hung), and a stop left waiting callers
    unanswered."""
    release = threading.Event()
    seen = []

    def slow(items):
        seen.append(list(items))
        release.wait(10)
        return items

    def metric(n, seconds):
        if n == 2:
            raise RuntimeError("a metric failed")

    async def go():
        b = MicroBatcher(slow, max_batch=2, max_wait_s=0.01, max_queue=2, on_batch=metric)
        b.start()
        first = b.enqueue("busy")
        await asyncio.sleep(0.1)  # the worker holds the first batch
        gone = [b.enqueue(f"gone-{n}") for n in range(2)]
        for job in gone:
            job.cancel()
        await asyncio.sleep(0)  # the done callbacks run
        assert b.depth == 0
        kept = [b.enqueue("kept-1"), b.enqueue("kept-2")]  # was Overloaded: "2 requests already waiting"
        release.set()
        assert await first == "busy"
        with pytest.raises(RuntimeError, match="a metric failed"):  # that batch's callers get the error
            await asyncio.gather(*kept)
        assert await b.enqueue("after") == "after"  # the loop went on
        release.clear()
        held = b.enqueue("held")
        await asyncio.sleep(0.1)
        waiting = b.enqueue("waiting")
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.1)
        release.set()
        await stopping
        for job in (held, waiting):
            with pytest.raises(Unavailable, match="stopping"):
                await job

    asyncio.run(go())
    assert ["gone-0"] not in seen and all("gone-0" not in batch for batch in seen)


def test_a_client_gone_mid_body_is_counted_499_and_hot_paths_keep_their_names():
    """A body cut off by the client is nobody's error: counted 499 under its path (a hot route
    has no FastAPI route, so the guard names it), never a 500."""
    async def handler(body, receive):
        return 200, b"{}", []

    g = _guard(HotRoutes(_ok, routes={"/events": (_Body, handler)}), named_paths=frozenset({"/events"}))
    sent = []

    async def go():
        messages = iter([{"type": "http.request", "body": b'{"n"', "more_body": True}, {"type": "http.disconnect"}])

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message)
        await g({"type": "http", "method": "POST", "path": "/events", "headers": []}, receive, send)
    asyncio.run(go())
    text = generate_latest(g.metrics.registry).decode()
    assert 'groundrec_requests_total{endpoint="/events",status="499"} 1.0' in text
    assert 'status="500"' not in text
    assert _call(g, "POST", "/events", json={"n": 1}).status_code == 200
    assert 'groundrec_requests_total{endpoint="/events",status="200"} 1.0' in generate_latest(g.metrics.registry).decode()


def test_with_several_workers_a_followed_gauge_is_written_where_the_scrape_reads(tmp_path):
    """prometheus_client's multiprocess scrape reads the workers' files, never a callback: the
    queue depth (a set_function) read 0 there. A worker writes it every FOLLOW_S."""
    import subprocess
    import sys

    code = ("import time; from groundrec.online.metrics import ServiceMetrics, FOLLOW_S\n"
            "m = ServiceMetrics(); m.follow(m.queue_depth, lambda: 7)\n"
            "time.sleep(FOLLOW_S + 0.5); print(m.exposition().decode())")
    env = {**__import__("os").environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "groundrec_queue_depth 7.0" in done.stdout


def test_a_bug_in_one_version_of_a_batch_fails_its_callers_only():
    """A micro-batch holding two experiment arms' versions: a bug in one version's answer went
    to every caller of the batch (the other version's too), where only Unavailable was per version."""
    from types import SimpleNamespace

    from groundrec.online.recommender import Recommender

    class Broken:
        def answer(self, queries):
            raise KeyError("a bug")

    class Echo:
        def answer(self, queries):
            return [f"answer to {q}" for q in queries]

    backends = {"v-broken": Broken(), "v-ok": Echo()}
    rec = SimpleNamespace(backend=backends.__getitem__)
    out = Recommender._compute(rec, [("v-ok", "a"), ("v-broken", "b"), ("v-ok", "c")])
    assert out[0] == "answer to a" and out[2] == "answer to c" and isinstance(out[1], KeyError)
