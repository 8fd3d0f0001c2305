"""The request path behind the two hot routes: the version holder, the micro-batcher that
feeds the serving backend, and ``handle``, which checks a request, queues it and returns the
reply. The HTTP layer (``service``) only routes to it."""

from __future__ import annotations

import asyncio
import sys
from contextlib import asynccontextmanager

from fastapi.concurrency import run_in_threadpool
from pydantic_core import to_json

from groundrec.online.backend import Backend
from groundrec.online.batching import MicroBatcher
from groundrec.online.config import ServeConfig
from groundrec.online.events import Events
from groundrec.online.holder import VersionHolder
from groundrec.online.hotpath import Reply
from groundrec.online.metrics import ServiceMetrics
from groundrec.online.schemas import RecommendRequest, SearchRequest, search_query
from groundrec.online.serving import ServingError, check_request
from groundrec.online.threads import limit_threads


async def _cancel_when_gone(receive, job: asyncio.Future) -> None:
    """Cancel ``job`` when the client has gone (the body was read already, so the next
    message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    job.cancel()


class Recommender:
    def __init__(self, cfg: ServeConfig, metrics: ServiceMetrics):
        self.cfg, self.metrics = cfg, metrics
        self.holder = VersionHolder(cfg, on_loaded=metrics.loaded,
                                    on_failed=lambda version, error: metrics.reload_failures.inc())
        self.batcher = MicroBatcher(self._compute, cfg.batch_max_size if cfg.batching else 1,
                                    cfg.batch_max_wait_ms / 1000, cfg.max_queue, on_batch=metrics.batch,
                                    worker_init=self._scoring_thread_limits if cfg.compute == "thread" else None)
        metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self.events = Events(cfg, self.serving)

    def serving(self) -> Backend:
        s = self.holder.current
        if s is None:
            raise ServingError(503, "no version loaded yet: is anything published in the artifacts directory?")
        return s

    def _compute(self, items: list) -> list:
        """The batcher's worker: one version for the whole batch, answers in order."""
        try:
            return self.serving().answer(items)
        except ServingError as e:
            return [e] * len(items)

    def _scoring_thread_limits(self) -> None:
        """compute: thread: the batch worker scores, so its own pools are limited and reported
        (OpenMP's count, which FAISS uses, is per thread: set in another thread, it does not hold)."""
        self.metrics.set_threads(limit_threads(self.cfg.compute_threads))

    @asynccontextmanager
    async def running(self, watch: bool = True):
        """Load the version (and watch CURRENT), start the batcher; stop both on exit."""
        # The event loop and the batch worker take turns on the GIL; Python's default 5 ms turn
        # made each wait for the other (docs/benchmarks.md).
        sys.setswitchinterval(self.cfg.gil_switch_interval_ms / 1000)
        # This process's own pools; /metrics reports those of whatever scores (the compute
        # process, or with compute: thread the batch worker), once it has started.
        limit_threads(self.cfg.compute_threads)
        await run_in_threadpool(self.holder.start if watch else self.holder.check)
        self.batcher.start()
        self.events.follow_popularity(self.holder)
        try:
            yield
        finally:
            await self.batcher.stop()
            self.holder.stop()
            self.events.close()

    async def handle(self, body: RecommendRequest | SearchRequest, receive) -> Reply:
        """Check ``body``, queue it for the next batch and return the reply: the JSON the batch
        worker built, or the error. A full queue raises ``Overloaded`` (answered by the guard).
        A request whose client goes first is dropped (499, which nobody reads; counted)."""
        try:
            self.serving()  # 503 at once when no version is loaded
            if isinstance(body, SearchRequest):
                body = search_query(body)
            check_request(self.cfg, body)  # the limits, checked once, before any work is queued
            body = await self.events.with_histories(body)  # a user_id's history, from the event store
            job = self.batcher.enqueue(body)
            watcher = asyncio.ensure_future(_cancel_when_gone(receive, job))
            try:
                return 200, await job, []
            except asyncio.CancelledError:
                if not watcher.done():
                    raise  # this request itself was cancelled (shutdown), not by its client
                self.metrics.gone.inc()  # the batcher skips a cancelled job
                return 499, b"", []
            finally:
                watcher.cancel()
        except ServingError as e:
            return e.status, to_json({"detail": e.detail}), []
