"""Python clients for the service: ``Client`` (sync), ``AsyncClient`` (asyncio), and
``LocalClient``, the same API in-process on a loaded version (notebooks, batch scoring).

Retries connection errors and 503 with backoff (events carry an event_id, drawn when the
caller gives none, so a retry never stores one twice); any other error status raises
``GroundrecError`` carrying the server's message.

The items API (``put_item``, ``patch_item``, ``delete_item``, ``put_items``) keeps the live
catalog; request bodies and paths are built in ``online/client_bodies.py``.

Every answer has a ``recommendation_id``; ``feedback(result, item_id, user_id)`` sends the
event a shown item earned with it, so the online report credits it to that list (its version
and experiment arm).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from groundrec.online.client_bodies import (GroundrecError, _batch_body, _events_body, _feedback_body, _item_path,
                                            _items_body, _list_path, _recommend_body, _search_body, _similar_path, segment)
from groundrec.online.schemas import BatchOut, EventsOut, ResultOut, UserQuery

RETRY_STATUS = {502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("detail", response.text) if isinstance(body, dict) else response.text
    raise GroundrecError(response.status_code, str(message)[:2000])


def _answer(response: httpx.Response, raw: bool = False):
    """A final reply's content: raised for (``_raise_for``) when an error, or when it is not
    the server's answer (a redirect, a proxy's page that is not JSON): a GroundrecError naming
    it, never a decoding error from deep inside httpx or json."""
    _raise_for(response)
    if 300 <= response.status_code < 400:  # not followed: no answer of the server's is a redirect
        raise GroundrecError(response.status_code, f"a redirect to {response.headers.get('location')!r}, not the "
                             "server's answer (a proxy in front of it?)")
    if raw:
        return response.content
    try:
        return response.json()
    except ValueError:
        raise GroundrecError(response.status_code, f"the reply is not the server's JSON answer "
                             f"({response.headers.get('content-type', 'no content type')}): "
                             f"{response.text[:200]!r}") from None


def _readiness(r: httpx.Response | Exception) -> dict:
    """/readyz's answer (200 ready, 503 not yet: both are answers here), or not ready with the
    reason when no server answered it (starting, gone) or something else did (a proxy's page)."""
    if isinstance(r, Exception):
        return {"ready": False, "reason": f"no answer: {type(r).__name__}: {r}"}
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code in (200, 503) and isinstance(body, dict):
        return body
    return {"ready": False, "reason": f"HTTP {r.status_code}: {r.text[:200]}"}


class _Http:
    """What both clients share: connection settings and when to retry."""

    transport: type = httpx.Client

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 10.0, retries: int = 3,
                 api_key: str | None = None, backoff_s: float = 0.2):
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = self.transport(base_url=url, timeout=timeout, headers=headers)
        self.retries, self.backoff_s = retries, backoff_s

    def _final(self, response: httpx.Response | None, attempt: int) -> bool:
        """True when this answer is the one to return (or raise for); False to retry."""
        last = attempt == self.retries
        return response is not None and (response.status_code not in RETRY_STATUS or last)

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """The wait before the next try: the backoff, or the server's ``Retry-After`` (seconds,
        at most ``MAX_RETRY_AFTER_S``) when it asks for longer (a shed request)."""
        wait = self.backoff_s * 2**attempt
        try:
            asked = float(response.headers.get("retry-after", 0)) if response is not None else 0.0
        except ValueError:  # an HTTP date: not sent by this server
            asked = 0.0
        return max(wait, min(asked, MAX_RETRY_AFTER_S))


class Client(_Http):
    """Sync client. ``recommend(["id1", "id2"], k=10)`` -> ResultOut."""

    def _call(self, method: str, path: str, body: dict | None = None, raw: bool = False):
        for attempt in range(self.retries + 1):
            try:
                r = self._http.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                r = None
            if self._final(r, attempt):
                return _answer(r, raw)
            time.sleep(self._delay(attempt, r))
        raise AssertionError("unreachable")

    def ready(self) -> dict:
        """GET /readyz, once, never raised for: ``ready`` (bool), the version serving and, when
        not ready, the ``reason``."""
        try:
            return _readiness(self._http.get("/readyz"))
        except httpx.TransportError as e:
            return _readiness(e)

    def thumbnail(self, item_id: str) -> bytes:
        """The item's thumbnail (GET /items/{id}/thumbnail): WebP bytes, or the page's SVG
        placeholder for an item without one."""
        return self._call("GET", _item_path(item_id, "/thumbnail"), raw=True)

    def recommend(self, history=(), k: int | None = None, **options) -> ResultOut:
        """By history (item ids, oldest first), or by ``user_id=`` (the history the server
        stored from events), or both; ``k`` None leaves the list's length to the server (its
        default, or the user's experiment arm's)."""
        return ResultOut.model_validate(self._call("POST", "/recommend", _recommend_body(history, k, **options)))

    def add_events(self, events) -> EventsOut:
        """Store events (dicts with user_id, item_id and optionally timestamp, type, weight,
        event_id, recommendation_id); the answer comes once they are durable."""
        return EventsOut.model_validate(self._call("POST", "/events", _events_body(events)))

    def feedback(self, result_or_id, item_id: str, user_id: str, type: str = "view", **fields) -> EventsOut:
        """What the user did with ``item_id`` of an answer (a ``ResultOut`` or its
        recommendation_id): one event carrying the id (and an event_id, so a retry is
        harmless); ``type`` one of the server's event_types (the default config's are view, cart
        and purchase: a click is a "view"); ``fields``: timestamp, weight, event_id. ``unattributed`` is 1 when the server
        found no such list shown to that user with that item (the event is stored all the same)."""
        return EventsOut.model_validate(self._call("POST", "/events", _feedback_body(result_or_id, item_id, user_id,
                                                                                      type, fields)))

    def delete_user(self, user_id: str) -> dict:
        """Erase every event of the user."""
        return self._call("DELETE", f"/users/{segment(user_id)}")

    def recommend_batch(self, users: list[dict | UserQuery], k: int | None = None) -> BatchOut:
        return BatchOut.model_validate(self._call("POST", "/recommend", _batch_body(users, k)))

    def search(self, text: str, k: int = 10, **options) -> ResultOut:
        return ResultOut.model_validate(self._call("POST", "/search", _search_body(text, k, **options)))

    def item(self, item_id: str, full: bool = False) -> dict:
        """The item's columns; ``full``: the whole answer (``item``, ``version``, and for a live
        catalog ``shown``: whether answers may show it now, ``live``)."""
        answer = self._call("GET", _item_path(item_id))
        return answer if full else answer["item"]

    def similar(self, item_id: str, k: int = 10, filters: dict | None = None) -> ResultOut:
        """Items like ``item_id`` (GET /items/{id}/similar)."""
        return ResultOut.model_validate(self._call("GET", _similar_path(item_id, k, filters)))

    def popular(self, k: int = 10, filters: dict | None = None) -> ResultOut:
        """The most popular items (GET /popular)."""
        return ResultOut.model_validate(self._call("GET", _list_path("/popular", k, filters)))

    def latest(self, k: int = 10, filters: dict | None = None) -> ResultOut:
        """The items that appeared last (GET /latest): live items by their first PUT."""
        return ResultOut.model_validate(self._call("GET", _list_path("/latest", k, filters)))

    # The live catalog (the items API). Each answers {"accepted": n, "applied_through": seq} once
    # the change is durable and applied by the server that took it (searchable and recommendable
    # there from the next request on; on its other workers and replicas within live_poll_s).
    def put_item(self, item_id: str, fields: dict) -> dict:
        """Add or replace an item: its catalog columns (``hidden``, ``available_until`` too)."""
        return self._call("PUT", _item_path(item_id), fields)

    def patch_item(self, item_id: str, fields: dict) -> dict:
        """Change a few fields of an item (``{"hidden": True}``, a price...)."""
        return self._call("PATCH", _item_path(item_id), fields)

    def delete_item(self, item_id: str) -> dict:
        """Remove an item (404 when there is none: a retry after a lost answer may find it gone)."""
        return self._call("DELETE", _item_path(item_id))

    def put_items(self, items: list[dict]) -> dict:
        """Add or replace many items at once (POST /items), each a dict with its ``item_id``;
        at most the server's max_items_batch (1000 by default)."""
        return self._call("POST", "/items", _items_body(items))

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient(_Http):
    """The same API for asyncio: ``await client.recommend([...])``."""

    transport = httpx.AsyncClient

    async def _call(self, method: str, path: str, body: dict | None = None, raw: bool = False):
        for attempt in range(self.retries + 1):
            try:
                r = await self._http.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                r = None
            if self._final(r, attempt):
                return _answer(r, raw)
            await asyncio.sleep(self._delay(attempt, r))
        raise AssertionError("unreachable")

    async def ready(self) -> dict:
        try:
            return _readiness(await self._http.get("/readyz"))
        except httpx.TransportError as e:
            return _readiness(e)

    async def thumbnail(self, item_id: str) -> bytes:
        return await self._call("GET", _item_path(item_id, "/thumbnail"), raw=True)

    async def recommend(self, history=(), k: int | None = None, **options) -> ResultOut:
        return ResultOut.model_validate(await self._call("POST", "/recommend", _recommend_body(history, k, **options)))

    async def add_events(self, events) -> EventsOut:
        return EventsOut.model_validate(await self._call("POST", "/events", _events_body(events)))

    async def feedback(self, result_or_id, item_id: str, user_id: str, type: str = "view", **fields) -> EventsOut:
        return EventsOut.model_validate(await self._call("POST", "/events", _feedback_body(
            result_or_id, item_id, user_id, type, fields)))

    async def delete_user(self, user_id: str) -> dict:
        return await self._call("DELETE", f"/users/{segment(user_id)}")

    async def recommend_batch(self, users: list[dict | UserQuery], k: int | None = None) -> BatchOut:
        return BatchOut.model_validate(await self._call("POST", "/recommend", _batch_body(users, k)))

    async def search(self, text: str, k: int = 10, **options) -> ResultOut:
        return ResultOut.model_validate(await self._call("POST", "/search", _search_body(text, k, **options)))

    async def item(self, item_id: str, full: bool = False) -> dict:
        answer = await self._call("GET", _item_path(item_id))
        return answer if full else answer["item"]

    async def similar(self, item_id: str, k: int = 10, filters: dict | None = None) -> ResultOut:
        return ResultOut.model_validate(await self._call("GET", _similar_path(item_id, k, filters)))

    async def popular(self, k: int = 10, filters: dict | None = None) -> ResultOut:
        return ResultOut.model_validate(await self._call("GET", _list_path("/popular", k, filters)))

    async def latest(self, k: int = 10, filters: dict | None = None) -> ResultOut:
        return ResultOut.model_validate(await self._call("GET", _list_path("/latest", k, filters)))

    async def put_item(self, item_id: str, fields: dict) -> dict:
        return await self._call("PUT", _item_path(item_id), fields)

    async def patch_item(self, item_id: str, fields: dict) -> dict:
        return await self._call("PATCH", _item_path(item_id), fields)

    async def delete_item(self, item_id: str) -> dict:
        return await self._call("DELETE", _item_path(item_id))

    async def put_items(self, items: list[dict]) -> dict:
        return await self._call("POST", "/items", _items_body(items))

    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose  # ``await client.close()``, as ``client.close()`` on the sync client

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


from groundrec.online.local_client import LocalClient  # noqa: E402  (the same API, no server)
