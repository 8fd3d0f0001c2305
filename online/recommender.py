"""The request path behind the two hot routes and the web page: the version holder, the
micro-batcher that feeds the serving backend, and ``answer``, which checks a request, fills
in a user_id's history, queues it and returns the answer (or raises the domain error that
stopped it, ``errors``). The HTTP layer (``service``, ``ui``) only routes to it."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager

from fastapi.concurrency import run_in_threadpool

from groundrec.online.backend import Backend
from groundrec.online.batching import MicroBatcher
from groundrec.online.config import ServeConfig
from groundrec.online.errors import ClientGone, Reply, Unavailable
from groundrec.online.events import Events
from groundrec.online.holder import VersionHolder
from groundrec.online.metrics import ServiceMetrics
from groundrec.online.schemas import RecommendRequest, SearchRequest
from groundrec.online.serving import checked
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
            raise Unavailable("no version loaded yet: is anything published in the artifacts directory?")
        return s

    def _compute(self, items: list) -> list:
        """The batcher's worker: one version for the whole batch, answers in order (an error
        of the whole call, such as ``Unavailable``, goes to every caller: ``MicroBatcher``)."""
        return self.serving().answer(items)

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

    async def answer(self, body: RecommendRequest | SearchRequest, receive=None) -> bytes:
        """The answer to ``body``, as the JSON the batch worker built. The request is checked
        against the limits once, here, before any work is queued (the backend answers checked
        queries), a user_id's history is read from the event store, then it waits for the next
        batch. Raises the error that stops it (``errors``): ``Unavailable`` at once when no
        version is loaded, ``Overloaded`` when the queue is full, the request's ``UserError``;
        with ``receive`` (the ASGI channel, body read), ``ClientGone`` when the client leaves
        first: the batcher then skips the request (counted)."""
        self.serving()
        query = await self.events.with_histories(checked(self.cfg, body))
        job = self.batcher.enqueue(query)
        if receive is None:
            return await job
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, job))
        try:
            return await job
        except asyncio.CancelledError:
            if not watcher.done():
                raise  # this request itself was cancelled (shutdown), not by its client
            self.metrics.gone.inc()
            raise ClientGone("the client went away before its answer was ready") from None
        finally:
            watcher.cancel()

    async def ask(self, body: RecommendRequest | SearchRequest, receive=None) -> dict:
        """``answer`` as a dict (the web page)."""
        return json.loads(await self.answer(body, receive))

    async def handle(self, body: RecommendRequest | SearchRequest, receive) -> Reply:
        """The hot routes' handler: 200 and the answer; an error is raised to the guard, which
        answers it (``errors.http_reply``)."""
        return 200, await self.answer(body, receive), []
