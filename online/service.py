"""The HTTP service: FastAPI on uvicorn over the retrieval core.

``create_app(cfg)`` builds the app (tests start it on a free loopback port);
``serve(cfg)`` runs it. No request can crash the process: bad input gets a 4xx that
names the problem, anything unexpected a 500 with a short reason.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from groundrec.online.holder import VersionHolder
from groundrec.online.schemas import BatchOut, RecommendRequest, ResultOut, SearchRequest
from groundrec.online.serving import Serving, ServingError
from groundrec.shared import artifact
from groundrec.online.config import ServeConfig

log = logging.getLogger("groundrec.serve")
OPEN_PATHS = {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}


class _Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("groundrec_requests_total", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("groundrec_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.version = Gauge("groundrec_version_info", "the serving version (value 1)", ["version"], registry=self.registry)
        self.reloads = Counter("groundrec_reloads_total", "versions loaded", registry=self.registry)
        self.reload_failures = Counter("groundrec_reload_failures_total", "versions rejected", registry=self.registry)
        self.version_created = Gauge("groundrec_version_created_timestamp_seconds",
                                     "when the serving version was published (alert on its age)", registry=self.registry)

    def loaded(self, version_id: str) -> None:
        self.version.clear()
        self.version.labels(version_id).set(1)
        self.version_created.set(artifact.created_at(version_id) or 0)
        self.reloads.inc()


def create_app(cfg: ServeConfig, watch: bool = True) -> FastAPI:
    metrics = _Metrics()
    holder = VersionHolder(cfg, on_loaded=metrics.loaded, on_failed=lambda v, e: metrics.reload_failures.inc())
    api_key = os.environ.get(cfg.api_key_env) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if watch:
            await run_in_threadpool(holder.start)
        else:
            await run_in_threadpool(holder.check)
        yield
        holder.stop()

    app = FastAPI(title="groundrec", version="1", lifespan=lifespan,
                  description="Recommendations from VLM-grounded item text.")
    app.state.holder, app.state.metrics = holder, metrics

    def serving() -> Serving:
        s = holder.current
        if s is None:
            raise ServingError(503, "no version loaded yet: is anything published in the artifacts directory?")
        return s

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        if api_key and request.url.path not in OPEN_PATHS and request.headers.get("x-api-key") != api_key:
            response = JSONResponse({"detail": "missing or wrong X-API-Key header"}, status_code=401)
        elif int(request.headers.get("content-length") or 0) > cfg.max_body_bytes or not await _body_fits(request):
            response = JSONResponse({"detail": f"body larger than max_body_bytes={cfg.max_body_bytes}"}, status_code=413)
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # never let a request take the process down
                log.exception("unhandled error on %s", request.url.path)
                response = JSONResponse({"detail": f"internal error: {type(e).__name__}"}, status_code=500)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    async def _body_fits(request: Request) -> bool:
        """A body without Content-Length (chunked) is read here, up to the limit and no further;
        the route then reads the cached bytes."""
        if "content-length" in request.headers or request.method not in ("POST", "PUT", "PATCH"):
            return True
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_body_bytes:
                return False
            chunks.append(chunk)
        request._body = b"".join(chunks)
        return True

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems), "errors": errors}, status_code=422)

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.post("/recommend", response_model=ResultOut | BatchOut)
    def recommend(body: RecommendRequest):
        return serving().recommend(body)

    @app.post("/search", response_model=ResultOut)
    def search(body: SearchRequest):
        return serving().search(body)

    @app.get("/items/{item_id}")
    def item(item_id: str):
        return serving().item(item_id)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        s = holder.current
        if s is None:
            return JSONResponse({"ready": False, "rejected": holder.rejected}, status_code=503)
        return {"ready": True, "version": s.version_id, "rejected": holder.rejected}

    @app.get("/metrics")
    def metrics_endpoint():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info")
