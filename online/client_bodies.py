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
def _recommend_body(history, k, **options) -> dict:
    return RecommendRequest(history=list(history), k=k, **options).model_dump(exclude_unset=True, exclude_none=True)


@_checked
def _batch_body(users: list[dict | UserQuery], k: int) -> dict:
    batch = [(u if "k" in u.model_fields_set else u.model_copy(update={"k": k})) if isinstance(u, UserQuery)
             else UserQuery(**{"k": k, **u}) for u in users]  # k for each user that names none
    return RecommendRequest(batch=batch).model_dump(exclude_unset=True, exclude_none=True)


@_checked
def _events_body(events) -> dict:
    """Each event (a dict or ``EventIn``) with an ``event_id``: one is drawn for an event
    without, so a retried request never stores it twice."""
    out = []
    for e in events:
        e = e if isinstance(e, EventIn) else EventIn(**e)
        out.append(e if e.event_id else e.model_copy(update={"event_id": uuid.uuid4().hex}))
    return EventsRequest(events=out).model_dump(exclude_none=True)


def _feedback_body(result_or_id, item_id: str, user_id: str, type: str, fields: dict) -> dict:
    """One event carrying the answer's recommendation_id (from a ``ResultOut`` or the id itself)."""
    rid = result_or_id.recommendation_id if isinstance(result_or_id, ResultOut) else result_or_id
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"feedback needs an answer's recommendation_id (a ResultOut or its id), not {rid!r}: "
                         "this answer has none")
    return _events_body([{"user_id": user_id, "item_id": item_id, "type": type, **fields, "recommendation_id": rid}])


@_checked
def _search_body(text, k, **options) -> dict:
    return SearchRequest(text=text, k=k, **options).model_dump(exclude_unset=True, exclude_none=True)


def _items_body(items) -> dict:
    """POST /items: ``{"items": [...]}``, each item a dict holding its ``item_id`` (ValueError
    naming the first without one, before anything is sent)."""
    items = list(items)
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "item_id" not in item:
            raise ValueError(f"items[{n}] must be a dict with item_id and the item's columns, not {item!r:.80}")
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
