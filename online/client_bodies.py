"""What the clients (``online/client.py``) send: request bodies holding only what the caller
set (so a newer client still talks to a server that does not know a newer field), and the
paths of the GET and item routes."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote, urlencode

from functools import wraps

from pydantic import ValidationError

from groundrec.online.schemas import (EventIn, EventsRequest, RecommendRequest, ResultOut, SearchRequest, UserQuery,
                                      validation_line)


class GroundrecError(RuntimeError):
    """What the service refused (``status``: its HTTP status), or a request the client refused
    before sending it (422, as the service would answer it)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def _checked(build):
    """A body builder whose invalid arguments raise ``GroundrecError`` (422) naming each field,
    before anything is sent."""
    @wraps(build)
    def checked(*args, **kwargs):
        try:
            return build(*args, **kwargs)
        except ValidationError as e:
            raise GroundrecError(422, validation_line(e.errors())) from None
    return checked


@_checked
def _recommend_body(history, k: int | None = None, **options) -> dict:
    """``k`` None: not sent (the server's default, or its experiment arm's, decides)."""
    if isinstance(history, (str, bytes)):  # list("a-1") would send its characters as three item ids
        raise GroundrecError(422, f"history must be a list of item ids (oldest first), not the text {history!r:.60}: "
                                  "recommend(['a-1'])")
    fields = {"history": list(history), **({"k": k} if k is not None else {}), **options}
    return RecommendRequest(**fields).model_dump(exclude_unset=True, exclude_none=True)


@_checked
def _batch_body(users: list[dict | UserQuery], k: int | None = None) -> dict:
    """``k`` for each user that names none (None: none sent, the server decides)."""
    at = {} if k is None else {"k": k}
    batch = [(u if "k" in u.model_fields_set or not at else u.model_copy(update=at)) if isinstance(u, UserQuery)
             else UserQuery(**{**at, **u}) for u in users]
    return RecommendRequest(batch=batch).model_dump(exclude_unset=True, exclude_none=True)


@_checked
def _events_body(events) -> dict:
    """Each event (a dict or ``EventIn``) with an ``event_id``: one is drawn for an event
    without, so a retried request never stores it twice."""
    if isinstance(events, (dict, EventIn, str, bytes)):
        raise GroundrecError(422, f"events must be a list of events, not one {type(events).__name__}: add_events([event])")
    out = []
    for n, e in enumerate(events):
        if not isinstance(e, (dict, EventIn)):
            raise GroundrecError(422, f"events[{n}] must be a dict or an EventIn, not {e!r:.80}")
        e = e if isinstance(e, EventIn) else EventIn(**e)
        out.append(e if e.event_id else e.model_copy(update={"event_id": uuid.uuid4().hex}))
    return EventsRequest(events=out).model_dump(exclude_none=True)


def _feedback_body(result_or_id, item_id: str, user_id: str, type: str, fields: dict) -> dict:
    """One event carrying the answer's recommendation_id (from a ``ResultOut`` or the id itself)."""
    rid = result_or_id.recommendation_id if isinstance(result_or_id, ResultOut) else result_or_id
    if not isinstance(rid, str) or not rid:
        raise GroundrecError(422, f"feedback needs an answer's recommendation_id (a ResultOut or its id), not {rid!r}: "
                                  "this answer has none")
    return _events_body([{"user_id": user_id, "item_id": item_id, "type": type, **fields, "recommendation_id": rid}])


@_checked
def _search_body(text, k, **options) -> dict:
    return SearchRequest(text=text, k=k, **options).model_dump(exclude_unset=True, exclude_none=True)


def _items_body(items) -> dict:
    """POST /items: ``{"items": [...]}``, each item a dict holding its ``item_id`` (422 naming
    the first without one, before anything is sent)."""
    if isinstance(items, (dict, str, bytes)):
        raise GroundrecError(422, f"items must be a list of items, not one {type(items).__name__}: put_items([item])")
    items = list(items)
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "item_id" not in item:
            raise GroundrecError(422, f"items[{n}] must be a dict with item_id and the item's columns, not {item!r:.80}")
    return {"items": items}


def segment(value: str) -> str:
    """An id as one path segment: escaped (a ``?``, a space or a ``/`` in it stays part of the
    id), and an id of dots alone (``.``, ``..``) with its dots escaped too, which an HTTP client
    would otherwise resolve as the current or parent folder (``DELETE /users/..`` was ``DELETE
    /``). A browser reads ``%2E`` as a dot all the same: the page cannot link to such an id."""
    escaped = quote(value, safe="")
    return escaped.replace(".", "%2E") if escaped in (".", "..") else escaped


def _item_path(item_id: str, tail: str = "") -> str:
    """/items/{id} (``segment``)."""
    return f"/items/{segment(item_id)}{tail}"


def _list_path(path: str, k: int, filters: dict | None) -> str:
    """A GET list route with its query string (``filters`` as JSON, as the route reads it)."""
    return f"{path}?{urlencode({'k': k, **({'filters': json.dumps(filters)} if filters else {})})}"


def _similar_path(item_id: str, k: int, filters: dict | None) -> str:
    return _list_path(_item_path(item_id, "/similar"), k, filters)
