"""The two hot routes, POST /recommend and POST /search, in plain ASGI.

FastAPI declares these routes (their OpenAPI docs) and serves a body not declared JSON, but
its per-request machinery (Request objects, dependency solving, ``json.loads`` and then
validation of Python objects) costs more CPU than the retrieval of a batched request. Here the
body is read from the ASGI messages, validated straight from its bytes by pydantic-core
(``model_validate_json``) and handed to the same ``handle`` the FastAPI routes call; the reply
is the JSON bytes the batch worker built. Errors have FastAPI's shape (422 ``detail`` +
``errors`` with ``loc`` starting at ``body``). A body that is not declared JSON goes to
FastAPI, which answers it as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ValidationError

from groundrec.online.schemas import validation_detail

Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]
Handler = Callable[[BaseModel, Callable], Awaitable[Reply]]


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return True  # FastAPI reads a body without a content type as JSON too
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


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


class HotRoutes:
    """``routes``: path -> (request model, handler). POSTs with a JSON body on those paths are
    answered here; every other request goes to ``app``."""

    def __init__(self, app, routes: dict[str, tuple[type[BaseModel], Handler]]):
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope.get("path")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not _is_json(dict(scope["headers"]).get(b"content-type")):
            return await self.app(scope, receive, send)
        model, handler = route
        try:
            body = await read_body(receive)
        except ConnectionResetError:
            return  # nobody to answer
        try:
            parsed = model.model_validate_json(body)
        except ValidationError as e:
            return await send_reply(send, 422, validation_detail([_explained(x) for x in e.errors()], prefix=("body",)))
        await send_reply(send, *await handler(parsed, receive))
