"""The items API: the live catalog's writes (PUT, PATCH, DELETE /items/{id}, POST /items for
feeds) and GET /latest. A write is answered once it is durable in the event store and applied
by this server's compute process and its standby (``catalog.LiveCatalog``); bad input is a 4xx
that names it, and nothing is stored."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core import from_json

from groundrec.online.errors import Unprocessable
from groundrec.online.schemas import ResultOut, ordered_fields
from groundrec.shared.errors import UserError


# Writes in the thread pool at once (each waits there for the group ahead of it, seconds while a
# feed's texts are encoded): the pool's other 24 of 40 threads stay for every other route.
WRITER_THREADS = 16


class ItemsOut(BaseModel):
    accepted: int = Field(description="changes stored (durable) and applied by this server when this answer is sent")
    applied_through: int = Field(description="the live catalog's change sequence this server has applied")


async def _json(request: Request):
    """The body as JSON, whatever its content type (400 naming the problem otherwise)."""
    try:
        return from_json(await request.body())
    except ValueError as e:
        raise UserError(f"the body is not valid JSON: {e}") from None


def mount_items(app: FastAPI, rec, query, parse_filters, reply) -> None:
    """Add the items API to ``app`` (``query``/``parse_filters``: the service's GET-parameter parsers,
    ``reply``: its answer as a response)."""
    catalog = rec.catalog
    writers = asyncio.Semaphore(WRITER_THREADS)

    async def write(changes) -> JSONResponse:
        async with writers:  # the rest wait here, holding no thread (/events, reads and pages need the pool)
            return JSONResponse(await run_in_threadpool(catalog.write, changes))

    @app.put("/items/{item_id:path}", response_model=ItemsOut)
    async def put_item(item_id: str, request: Request):
        """Add or replace an item: a flat JSON object of its catalog columns (those of the
        serving version's item table; ``hidden`` and ``available_until`` too). Recommendable,
        searchable and shown from the next request on."""
        return await write([(item_id, "put", await _json(request))])

    @app.patch("/items/{item_id:path}", response_model=ItemsOut)
    async def patch_item(item_id: str, request: Request):
        """Change a few fields of an item (``hidden``, ``available_until``, a price...)."""
        return await write([(item_id, "patch", await _json(request))])

    @app.delete("/items/{item_id:path}", response_model=ItemsOut)
    async def delete_item(item_id: str):
        """Remove an item: in no answer from the next request on, and 404 for GET /items/{id}."""
        return await write([(item_id, "delete", {})])

    @app.post("/items", response_model=ItemsOut)
    async def post_items(request: Request):
        """Many upserts at once (a feed): ``{"items": [{"item_id": ..., <columns>}, ...]}``."""
        body = await _json(request)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise Unprocessable('the body must be {"items": [{"item_id": ..., <column>: <value>, ...}, ...]}')
        changes = []
        for n, item in enumerate(items):
            if not isinstance(item, dict) or "item_id" not in item:
                raise Unprocessable(f"items.{n}: an object with item_id and the item's columns")
            fields = dict(item)
            changes.append((fields.pop("item_id"), "put", fields))
        return await write(changes)

    @app.get("/latest", response_model=ResultOut)
    async def latest(request: Request, k: int = Query(10, ge=1), filters: str | None = None):
        """The items that appeared last (a live item's first PUT, else its first interaction in
        the version's window), filters respected; a list shown like any other."""
        body = query(**ordered_fields("latest", k, parse_filters(filters)))
        return reply(*await rec.handle(body, request.receive))
