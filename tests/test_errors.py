"""The domain's errors (online/errors.py) and the one place they become HTTP: each type's
status, body and headers; they cross the compute process's pipe intact; the guard answers
one raised by a hot route with the same bytes as FastAPI's handler and the web page's status,
and anything else stays the guard's 500."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import time

import httpx
import pytest
from pydantic import BaseModel

from groundrec.online.compute import ComputeDied
from groundrec.online.config import ServeConfig
from groundrec.online.errors import (ERRORS, ClientGone, NotFound, Overloaded, Unavailable, Unprocessable,
                                     http_reply, http_status)
from groundrec.online.guard import Guard
from groundrec.online.hotpath import HotRoutes
from groundrec.online.metrics import ServiceMetrics
from groundrec.online.service import create_app
from groundrec.shared.errors import UserError
from helpers import running

class _Body(BaseModel):
    pass


CASES = [(Unavailable("the event store is unavailable: down"), 503),
         (ComputeDied("the compute process of version v exited (code -9)"), 503),
         (NotFound("no item 'x' in version v"), 404),
         (Unprocessable("k=50 exceeds max_k=20"), 422),
         (UserError("unknown filter column 'nope'"), 400)]


@pytest.mark.parametrize("error,status", CASES, ids=lambda x: type(x).__name__ if isinstance(x, Exception) else str(x))
def test_each_error_is_its_status_and_its_message_as_detail(error, status):
    assert http_reply(error) == (status, json.dumps({"detail": str(error)}, separators=(",", ":")).encode(), [])
    assert http_status(error) == status


def test_an_overload_says_when_to_retry_and_a_gone_client_gets_nothing():
    status, body, headers = http_reply(Overloaded("70 requests already waiting (max_queue=64)"), retry_after_s=7)
    assert (status, json.loads(body), headers) == (
        503, {"detail": "overloaded, retry later: the request queue is full"}, [(b"retry-after", b"7")])
    assert http_reply(ClientGone("gone")) == (499, b"", [])


def test_a_bug_is_not_an_answerable_error():
    with pytest.raises(TypeError, match="KeyError is not an answerable error"):
        http_reply(KeyError("a bug"))
    assert not isinstance(KeyError(), ERRORS) and not isinstance(RuntimeError(), ERRORS)


def _echo(conn):
    conn.send(conn.recv())


def test_errors_cross_a_process_pipe_as_they_are():
    errors = [e for e, _ in CASES] + [Overloaded("full"), ClientGone("gone")]
    ctx = mp.get_context("spawn")  # as the compute process: a child that sends back what it gets
    here, there = ctx.Pipe()
    child = ctx.Process(target=_echo, args=(there,))
    child.start()
    here.send(errors)
    back = here.recv()
    child.join(10)
    assert [(type(e), str(e), http_reply(e)) for e in back] == [(type(e), str(e), http_reply(e)) for e in errors]


def _call(app, method: str, path: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.request(method, path, **kw)
    return asyncio.run(go())


def test_the_guard_answers_what_a_hot_route_raises_and_counts_an_overload_once(caplog):
    raised: list[BaseException] = []

    async def handler(body, receive):
        raise raised[-1]

    metrics = ServiceMetrics()
    app = Guard(HotRoutes(None, routes={"/hot": (_Body, handler)}), metrics=metrics, api_key=None,
                max_body_bytes=1000, body_timeout_s=1.0, retry_after_s=3)
    for error, status in CASES:
        raised.append(error)
        r = _call(app, "POST", "/hot", json={})
        assert (r.status_code, r.json()) == (status, {"detail": str(error)})
    raised.append(Overloaded("the queue filled while the body was read"))
    r = _call(app, "POST", "/hot", json={})
    assert r.status_code == 503 and r.headers["retry-after"] == "3" and "queue is full" in r.json()["detail"]
    assert metrics.shed._value.get() == 1
    raised.append(ValueError("a bug, not the user's mistake"))  # a ValueError that is not a UserError
    with caplog.at_level(logging.ERROR, logger="groundrec.serve"):
        r = _call(app, "POST", "/hot", json={})
    assert r.status_code == 500 and "request_id" in r.json()


def test_the_hot_routes_fastapi_and_the_page_answer_an_error_alike(tmp_path):
    """With no version loaded: a hot route (through the guard), a FastAPI route (its exception
    handler) and the web page give the same status and the same message."""
    with running(create_app(ServeConfig(artifacts=str(tmp_path), events="none"), watch=False)) as url:
        hot = httpx.post(url + "/recommend", json={"history": ["a"]})
        cold = httpx.get(url + "/items/a")
        page = httpx.get(url + "/ui/items/a")
        events = httpx.post(url + "/events", json={"events": [{"user_id": "u", "item_id": "a"}]})
    detail = "no version loaded yet: is anything published in the artifacts directory?"
    assert (hot.status_code, hot.content) == (cold.status_code, cold.content) == (
        503, json.dumps({"detail": detail}, separators=(",", ":")).encode())
    assert page.status_code == 503 and f'role="alert">{detail}</p>' in page.text
    # a server set up without events: 501, which no client retries (a 503 was retried three times)
    assert (events.status_code, events.json()) == (501, {"detail": "events are off (serve config events: none)"})
    from groundrec.online.client import Client, GroundrecError

    with running(create_app(ServeConfig(artifacts=str(tmp_path), events="none"), watch=False)) as url:
        client = Client(url, backoff_s=10.0)  # a retry would wait 10 s
        started = time.monotonic()
        with pytest.raises(GroundrecError) as off:
            client.add_events([{"user_id": "u", "item_id": "a"}])
        assert off.value.status == 501 and time.monotonic() - started < 5.0  # answered at once, not retried
