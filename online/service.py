"""The HTTP service: FastAPI on uvicorn over the retrieval core, the two hot routes in plain ASGI.

``create_app(cfg)`` builds the app (tests start it on a free loopback port; the Ray Serve
app wraps the same factory); ``serve(cfg)`` runs it in one or more processes. Routes are
async: retrieval runs behind a micro-batcher (see ``batching``), whose one worker thread
hands each batch to the version's compute process (``compute``; or scores it itself with
``compute: thread``), so
probes and HTTP parsing never wait behind it, and a full queue is answered 503 at once. No
request can crash the process: bad input gets a 4xx that names the problem, anything
unexpected a 500 with a short reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from fastapi import FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from groundrec.online.answers import item_json
from groundrec.online.config import ServeConfig
from groundrec.online.errors import ERRORS, NotFound
from groundrec.online.guard import Guard, api_keys, bug_reply, error_reply
from groundrec.online.hotpath import HotRoutes
from groundrec.online.items_api import mount_items
from groundrec.online.metrics import MULTIPROC_ENV, ServiceMetrics, forget_dead_workers
from groundrec.online.recommender import Recommender
from groundrec.online.schemas import (BatchOut, EventsOut, EventsRequest, RecommendRequest, ResultOut, SearchRequest,
                                      ordered_fields, similar_fields, validation_detail)
from groundrec.shared import artifact
from groundrec.shared.errors import UserError
from groundrec.online.serving import public_text
from groundrec.online.version import strategy_info
from groundrec.online.ui import mount_ui

log = logging.getLogger("groundrec.serve")
CONFIG_ENV = "GROUNDREC_SERVE_CONFIG"  # the config, as JSON, for worker processes


class ServiceApp:
    """The service as an ASGI app: the guard, then the two hot routes, then FastAPI for every
    other request. FastAPI sits behind them rather than in front: its own ``__call__`` and
    middleware (telemetry checks, error and body-limit wrappers) cost more of the event
    loop's time than a refusal or a hot request itself (py-spy, 256 connections: about a
    quarter of the loop's samples), and it only serves the cold routes. ``api`` is the FastAPI
    app (OpenAPI docs, the other routes, the lifespan), ``state`` its state; ``front`` is the
    chain that ends in it."""

    def __init__(self, api: FastAPI, front):
        self.api, self.state, self._app = api, api.state, front

    async def __call__(self, scope, receive, send):
        await self._app(scope, receive, send)


def create_app(cfg: ServeConfig, watch: bool = True) -> ServiceApp:
    """The service: the guard, the hot routes, then FastAPI (``watch``: follow CURRENT)."""
    metrics = ServiceMetrics()
    rec = Recommender(cfg, metrics)
    app = FastAPI(title="groundrec", version="1", lifespan=lambda app: rec.running(watch),
                  description="Recommendations from VLM-grounded item text.")
    app.state.holder, app.state.metrics, app.state.batcher = rec.holder, metrics, rec.batcher
    _error_handlers(app, metrics, cfg.retry_after_s)
    _routes(app, rec)
    mount_items(app, rec, _query, _filters, _reply)
    mount_ui(app, rec, cfg.report)
    _catch_alls_last(app)
    hot = HotRoutes(app, routes={"/recommend": (RecommendRequest, rec.handle), "/search": (SearchRequest, rec.handle),
                                 "/events": (EventsRequest, rec.events.handle)})
    api_key, read_key = api_keys(cfg)
    front = Guard(hot, metrics=metrics, api_key=api_key, read_key=read_key,
                  max_body_bytes=cfg.max_body_bytes, body_timeout_s=cfg.body_timeout_s,
                  overloaded=lambda: rec.batcher.full, shed_paths=frozenset({"/recommend", "/search"}),
                  named_paths=frozenset({"/events"}), retry_after_s=cfg.retry_after_s)
    return ServiceApp(app, front)


def _catch_alls_last(app: FastAPI) -> None:
    """An id may hold a '/' (servers decode %2F before routing, so its routes take the rest of
    the path): ``/items/{item_id:path}`` would also match ``/items/x/similar``, so the routes that
    end in such an id are tried after every other (the sort is stable). An id that itself ends
    in ``/similar`` or ``/thumbnail`` is read as that route of the id before it."""
    app.router.routes.sort(key=lambda route: getattr(route, "path", "").endswith(":path}"))


def _reply(status: int, body: bytes, headers: list) -> Response:
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in headers})


def _error_handlers(app: FastAPI, metrics: ServiceMetrics, retry_after_s: int) -> None:
    """FastAPI's own errors in our shapes, and the domain's errors (``errors``) answered as on
    the hot routes, and a bug as the guard answers it (``bug_reply``)."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return Response(validation_detail(exc.errors()), status_code=422, media_type="application/json")

    async def domain_error(request: Request, exc: Exception):
        return _reply(*error_reply(exc, metrics, retry_after_s))

    for kind in ERRORS:
        app.add_exception_handler(kind, domain_error)

    async def bug(request: Request, exc: Exception):  # else Starlette sends a text/plain 500 first
        if isinstance(exc, ClientDisconnect):  # a body cut off: nobody to answer, no bug (the guard's 499)
            return Response(status_code=499)
        return Response(bug_reply(exc, request.url.path), status_code=500, media_type="application/json")

    app.add_exception_handler(Exception, bug)


def _routes(app: FastAPI, rec: Recommender) -> None:
    holder, metrics = rec.holder, rec.metrics

    # HotRoutes (in front, see ServiceApp) answers these three before FastAPI sees them, whatever
    # the body's content type; FastAPI documents them.
    @app.post("/recommend", response_model=ResultOut | BatchOut)
    async def recommend(body: RecommendRequest, request: Request):
        return _reply(*await rec.handle(body, request.receive))

    @app.post("/search", response_model=ResultOut)
    async def search(body: SearchRequest, request: Request):
        return _reply(*await rec.handle(body, request.receive))

    @app.post("/events", response_model=EventsOut)
    async def events(body: EventsRequest, request: Request):
        return _reply(*await rec.events.handle(body, request.receive))

    @app.delete("/users/{user_id:path}")  # a user id may hold a '/' (servers decode %2F before routing)
    async def delete_user(user_id: str):  # the store's erasures in the thread pool, the wait between them not
        """Erase every event of the user from the event store (the right to be forgotten)."""
        return JSONResponse(await rec.events.delete_user(user_id))

    @app.get("/items/{item_id:path}")  # an item id may hold a '/' (see _catch_alls_last)
    def item(item_id: str):  # sync: FastAPI runs it in a thread, as it may wait for the compute process
        return Response(item_json(rec.serving().item(item_id)), media_type="application/json")

    @app.get("/items/{item_id:path}/similar", response_model=ResultOut)
    async def similar(item_id: str, request: Request, k: int = Query(10, ge=1), filters: str | None = None):
        """Items like this one (``schemas.similar_fields``); ``filters``: a JSON object, as in
        /recommend. A list shown like any other (an id, an impression)."""
        if await run_in_threadpool(rec.serving().unknown, [item_id]):  # the compute process: off the event loop
            raise NotFound(f"no item {item_id!r} in the serving version")
        body = _query(**similar_fields(item_id, k, _filters(filters)))
        return _reply(*await rec.handle(body, request.receive))

    @app.get("/popular", response_model=ResultOut)
    async def popular(request: Request, k: int = Query(10, ge=1), filters: str | None = None):
        """The most popular items (the server's popularity: its window of events, or
        --interactions), filters respected; a list shown like any other."""
        return _reply(*await rec.handle(_query(**ordered_fields("popular", k, _filters(filters))), request.receive))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    profiles: dict[str, dict] = {}  # version id -> its strategy_info (read once)

    def profile_of(version_id: str) -> dict:
        if version_id not in profiles:
            try:
                profiles[version_id] = strategy_info(artifact.locate(rec.cfg.artifacts, version_id,
                                                                     rec.cfg.version_cache_dir))
            except (OSError, ValueError, UserError):  # gone since it loaded: readiness is what counts here
                return {}
        return profiles[version_id]

    @app.get("/readyz")
    async def readyz():
        s = holder.current
        alive = s is not None and s.alive  # a dead compute process: not ready until it is replaced
        rejected = dict(holder.rejected)  # a copy: the reload thread writes it (iterated, a 500 when it changed)
        body = {"ready": alive, "rejected": {k: public_text(v) for k, v in rejected.items()}}
        if holder.fallback_for is not None:  # CURRENT's version cannot load: an older one serves meanwhile
            body["fallback_for"] = holder.fallback_for
        if s is None:
            return JSONResponse(body, status_code=503)
        if not alive:
            return JSONResponse({**body, "version": s.version_id,
                                 "reason": "the compute process exited; a new one is being started"}, status_code=503)
        if not rec.catalog.synced:  # items hidden or deleted since the job would be shown, live items missing
            return JSONResponse({**body, "ready": False, "version": s.version_id,
                                 "reason": "the live catalog is not read yet: the event store is unavailable"},
                                status_code=503)
        return {**body, "version": s.version_id, **await run_in_threadpool(profile_of, s.version_id)}

    @app.get("/metrics")
    async def metrics_endpoint():
        pools = holder.current.threads if holder.current is not None else None  # a compute process's pools
        if pools:
            metrics.set_threads(pools)
        return PlainTextResponse(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _query(**fields) -> RecommendRequest:
    """A request built from a GET route's parameters: invalid values are a 422 like a body's."""
    try:
        return RecommendRequest(**fields)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def _filters(text: str | None) -> dict | None:
    """A query string's ``filters``: a JSON object of column -> value(s); a UserError naming it otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
        raise UserError(f"filters must be a JSON object such as {{\"colour\": \"red\"}}: "
                        f"{e if isinstance(e, ValueError) else 'nested too deep'}") from None
    if not isinstance(value, dict):
        raise UserError(f"filters must be a JSON object of column -> value(s), not {type(value).__name__}")
    return value


def app_from_env() -> ServiceApp:
    """The factory each worker process calls (``--workers N``): the config comes as JSON."""
    forget_dead_workers()
    return create_app(ServeConfig.model_validate(json.loads(os.environ[CONFIG_ENV])))


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Client addresses from X-Forwarded-For are only used by the access log: without it, skip
    # uvicorn's proxy-header middleware (measurable event-loop time per request).
    common = dict(host=cfg.host, port=cfg.port, log_level="info", access_log=cfg.access_log,
                  proxy_headers=cfg.access_log)
    if cfg.workers == 1:
        uvicorn.run(create_app(cfg), **common)
        return
    os.environ[CONFIG_ENV] = cfg.model_dump_json()
    # Every worker's metrics in one scrape: prometheus_client's files, one folder a server run.
    os.environ[MULTIPROC_ENV] = folder = tempfile.mkdtemp(prefix="groundrec-metrics-")
    try:
        uvicorn.run("groundrec.online.service:app_from_env", factory=True, workers=cfg.workers, **common)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
