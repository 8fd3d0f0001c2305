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

import asyncio
import json
import logging
import os
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_core import to_json

from groundrec.online.batching import MicroBatcher, Overloaded
from groundrec.online.config import ServeConfig
from groundrec.online.guard import Guard, overload_reply
from groundrec.online.holder import VersionHolder
from groundrec.online.metrics import ServiceMetrics
from groundrec.online.hotpath import HotRoutes, Reply
from groundrec.online.backend import Backend
from groundrec.online.schemas import (BatchOut, RecommendRequest, ResultOut, SearchRequest, search_query,
                                      validation_detail)
from groundrec.online.serving import ServingError, check_request, public_text
from groundrec.online.threads import limit_threads

log = logging.getLogger("groundrec.serve")
CONFIG_ENV = "GROUNDREC_SERVE_CONFIG"  # the config, as JSON, for worker processes


async def _cancel_when_gone(receive, job: asyncio.Future) -> None:
    """Cancel ``job`` when the client has gone (the body was read already, so the next
    message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    job.cancel()


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
    metrics = ServiceMetrics()

    holder = VersionHolder(cfg, on_loaded=metrics.loaded, on_failed=lambda v, e: metrics.reload_failures.inc())
    api_key = os.environ.get(cfg.api_key_env) or None
    retry_after = str(cfg.retry_after_s).encode()

    def serving() -> Backend:
        s = holder.current
        if s is None:
            raise ServingError(503, "no version loaded yet: is anything published in the artifacts directory?")
        return s

    def compute(items: list) -> list:
        """The batcher's worker: one version for the whole batch, answers in order."""
        try:
            return serving().answer(items)
        except ServingError as e:
            return [e] * len(items)

    def scoring_thread_limits() -> None:
        """compute: thread: the batch worker scores, so its own pools are limited and reported
        (OpenMP's count, which FAISS uses, is per thread: set in another thread, it does not hold)."""
        metrics.set_threads(limit_threads(cfg.compute_threads))

    batcher = MicroBatcher(compute, cfg.batch_max_size if cfg.batching else 1, cfg.batch_max_wait_ms / 1000,
                           cfg.max_queue, on_batch=metrics.batch,
                           worker_init=scoring_thread_limits if cfg.compute == "thread" else None)
    metrics.queue_depth.set_function(lambda: batcher.depth)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The event loop and the batch worker take turns on the GIL; Python's default 5 ms
        # turn made each wait for the other (measured: ~560 -> ~800 req/s at 32 connections).
        sys.setswitchinterval(cfg.gil_switch_interval_ms / 1000)
        # This process's own pools; /metrics reports those of whatever scores (the compute
        # process, or with compute: thread the batch worker), once it has started.
        limit_threads(cfg.compute_threads)
        await run_in_threadpool(holder.start if watch else holder.check)
        batcher.start()
        yield
        await batcher.stop()
        holder.stop()

    app = FastAPI(title="groundrec", version="1", lifespan=lifespan,
                  description="Recommendations from VLM-grounded item text.")
    app.state.holder, app.state.metrics, app.state.batcher = holder, metrics, batcher

    async def handle(body: RecommendRequest | SearchRequest, receive) -> Reply:
        """Check ``body``, queue it for the next batch and return the reply: the JSON the batch
        worker built, or the error. A request whose client goes first is dropped (499, which
        nobody reads; counted in the metrics). The hot path and the FastAPI routes both call it."""
        try:
            serving()  # 503 at once when no version is loaded
            if isinstance(body, SearchRequest):
                body = search_query(body)
            check_request(cfg, body)  # the limits, checked once, before any work is queued
            job = batcher.enqueue(body)  # Overloaded: answered by the guard (or the handler below)
            watcher = asyncio.ensure_future(_cancel_when_gone(receive, job))
            try:
                return 200, await job, []
            except asyncio.CancelledError:
                if not watcher.done():
                    raise  # this request itself was cancelled (shutdown), not by its client
                metrics.gone.inc()  # the batcher skips a cancelled job
                return 499, b"", []
            finally:
                watcher.cancel()
        except ServingError as e:
            return e.status, to_json({"detail": e.detail}), []

    def reply(status: int, body: bytes, headers: list) -> Response:
        return Response(body, status_code=status, media_type="application/json",
                        headers={k.decode(): v.decode() for k, v in headers})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return Response(validation_detail(exc.errors()), status_code=422, media_type="application/json")

    @app.exception_handler(Overloaded)  # a body FastAPI parsed (not declared JSON) met a full queue
    async def overloaded(request: Request, exc: Overloaded):
        return reply(*overload_reply(metrics, retry_after))

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    # HotRoutes (in front, see ServiceApp) answers these two before FastAPI sees them;
    # FastAPI documents them, and serves a body that is not declared JSON.
    @app.post("/recommend", response_model=ResultOut | BatchOut)
    async def recommend(body: RecommendRequest, request: Request):
        return reply(*await handle(body, request.receive))

    @app.post("/search", response_model=ResultOut)
    async def search(body: SearchRequest, request: Request):
        return reply(*await handle(body, request.receive))

    @app.get("/items/{item_id}")
    def item(item_id: str):  # sync: FastAPI runs it in a thread, as it may wait for the compute process
        return JSONResponse(serving().item(item_id))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        s = holder.current
        alive = s is not None and s.alive  # a dead compute process: not ready until it is replaced
        body = {"ready": alive, "rejected": {k: public_text(v) for k, v in holder.rejected.items()}}
        if s is None:
            return JSONResponse(body, status_code=503)
        if not alive:
            return JSONResponse({**body, "version": s.version_id,
                                 "reason": "the compute process exited; a new one is being started"}, status_code=503)
        return {**body, "version": s.version_id}

    @app.get("/metrics")
    async def metrics_endpoint():
        pools = holder.current.threads if holder.current is not None else None  # a compute process's pools
        if pools:
            metrics.set_threads(pools)
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    hot = HotRoutes(app, routes={"/recommend": (RecommendRequest, handle), "/search": (SearchRequest, handle)})
    front = Guard(hot, metrics=metrics, api_key=api_key, max_body_bytes=cfg.max_body_bytes,
                  body_timeout_s=cfg.body_timeout_s, overloaded=lambda: batcher.full,
                  shed_paths=frozenset({"/recommend", "/search"}), retry_after_s=cfg.retry_after_s)
    return ServiceApp(app, front)


def app_from_env() -> ServiceApp:
    """The factory each worker process calls (``--workers N``): the config comes as JSON."""
    return create_app(ServeConfig.model_validate(json.loads(os.environ[CONFIG_ENV])))


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Client addresses from X-Forwarded-For are only used by the access log: without it, skip
    # uvicorn's proxy-header middleware (~3% of the event loop's time per request).
    common = dict(host=cfg.host, port=cfg.port, log_level="info", access_log=cfg.access_log,
                  proxy_headers=cfg.access_log)
    if cfg.workers == 1:
        uvicorn.run(create_app(cfg), **common)
        return
    os.environ[CONFIG_ENV] = cfg.model_dump_json()
    uvicorn.run("groundrec.online.service:app_from_env", factory=True, workers=cfg.workers, **common)
