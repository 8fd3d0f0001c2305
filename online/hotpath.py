"""The hot routes, POST /recommend, /search and /events, in plain ASGI.

FastAPI declares these routes (their OpenAPI docs), but its per-request machinery (Request objects, dependency solving, ``json.loads`` and then
validation of Python objects) costs more CPU than the retrieval of a batched request. Here the
body is read from the ASGI messages, validated straight from its bytes by pydantic-core
(``model_validate_json``) and handed to the same ``handle`` the FastAPI routes call; the reply
is the JSON bytes the batch worker built. The body is read as JSON whatever content type it
declares (``curl -d`` sends ``application/x-www-form-urlencoded``): these routes take nothing
else. Validation errors have FastAPI's shape (422 ``detail`` + ``errors`` with ``loc``
starting at ``body``; a body that is not JSON is one, ``Invalid JSON`` and where); an error the
handler raises is answered by the guard (``errors.http_reply``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ValidationError

from groundrec.online.errors import ClientGone, Reply
from groundrec.online.schemas import validation_detail

Handler = Callable[[BaseModel, Callable], Awaitable[Reply]]


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected while sending the body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_reply(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _explained(error: dict) -> dict:
    """pydantic-core's JSON parser refuses a lone surrogate (``"\\ud800"``, which JSON's grammar
    allows) as an "unexpected end of hex escape": say what it is."""
    if error["type"] == "json_invalid" and "hex escape" in error["msg"]:
        return {**error, "msg": f"{error['msg']}: text must be valid Unicode, without lone surrogates such as \\ud800"}
    return error


def route_path(scope) -> str:
    """The path the app routes on: ``scope["path"]`` less the ``root_path`` a proxy or a route
    prefix put in front of it (as Starlette routes), so that a request is classified as the
    route that will run it (``PUT /api/items/x`` under root path ``/api`` is a write)."""
    path, root = scope["path"], scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path


class HotRoutes:
    """``routes``: path -> (request model, handler). POSTs on those paths are answered here,
    their body read as JSON; every other request goes to ``app``."""

    def __init__(self, app, routes: dict[str, tuple[type[BaseModel], Handler]]):
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send):
        route = self.routes.get(route_path(scope)) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        model, handler = route
        try:
            body = await read_body(receive)
        except ConnectionResetError:
            raise ClientGone("the client went away while sending the body") from None  # counted 499, no answer
        try:
            parsed = model.model_validate_json(body)
        except ValidationError as e:
            return await send_reply(send, 422, validation_detail([_explained(x) for x in e.errors()], prefix=("body",)))
        await send_reply(send, *await handler(parsed, receive))
