"""Micro-batching with admission control, for the service's compute-bound requests.

Concurrent requests are gathered for at most ``max_wait_s`` (or until ``max_batch`` are
waiting) and handed to one function call in one worker thread: on a flat index the item
matrix is then read once per batch instead of once per user, and the event loop stays free
for HTTP parsing and probes. Beyond ``max_queue`` waiting requests a new one is refused at
once (``errors.Overloaded``: 503 with Retry-After) instead of queueing for seconds. A request
whose caller has gone (its future was cancelled) is dropped before it is computed, and stops
counting as waiting at once (else callers gone during a long batch refused the live ones).
A batch whose bookkeeping fails answers its callers with the error and the loop goes on; a
stop answers every caller still waiting (``Unavailable``), none is left hanging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from groundrec.online.errors import Overloaded, Unavailable

log = logging.getLogger("groundrec.serve")


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    dropped_gone: int = 0


class _Entry:
    """A request in the queue: its item, its future and whether it still counts as waiting."""

    __slots__ = ("item", "future", "queued")

    def __init__(self, item, future: asyncio.Future):
        self.item, self.future, self.queued = item, future, True


class MicroBatcher:
    """``await enqueue(x)`` -> ``fn([... x ...])[i]``. ``fn`` takes a list and returns one
    result per item, in order; a result that is an exception is raised to that caller only."""

    def __init__(self, fn: Callable[[list], Sequence], max_batch: int = 64, max_wait_s: float = 0.002,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None,
                 worker_init: Callable[[], None] | None = None):
        self.fn, self.max_batch, self.max_wait_s, self.max_queue = fn, max_batch, max_wait_s, max_queue
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._waiting = 0  # queued entries whose caller is still there (``depth``)
        # ``worker_init`` runs in the worker thread before its first batch: settings that are
        # per thread, such as OpenMP's thread count (FAISS), must be made there.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="groundrec-batch", initializer=worker_init)

    @property
    def depth(self) -> int:
        return self._waiting

    @property
    def full(self) -> bool:
        """The one overload rule: ``max_queue`` requests are waiting. The service's guard asks it
        before reading a body; ``enqueue`` refuses by it."""
        return self.depth >= self.max_queue

    def start(self) -> None:
        self._pool.submit(lambda: None)  # start the worker (and its worker_init) now, not on the first request
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="groundrec-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():  # never answered: told so
            _settle(self._queue.get_nowait().future, Unavailable("the server is stopping; send it again"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, item) -> asyncio.Future:
        """Queue ``item`` and return the future of its result (raises ``Overloaded`` at once
        when the queue is full). Cancel the future to drop the item if it is still waiting."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self.full:
            raise Overloaded(f"{self._waiting} requests already waiting (max_queue={self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        entry = _Entry(item, future)
        future.add_done_callback(lambda _: self._left(entry))  # a caller gone stops counting at once
        self._waiting += 1
        self._queue.put_nowait(entry)
        return future

    def _left(self, entry: _Entry) -> None:
        """``entry`` no longer waits: taken into a batch, or its caller has gone."""
        if entry.queued:
            entry.queued = False
            self._waiting -= 1

    async def _gather(self) -> list[_Entry]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        for entry in batch:
            self._left(entry)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [e for e in batch if not e.future.done()]  # done = cancelled: caller gone
            self.stats.dropped_gone += len(batch) - len(live)
            if not live:
                continue
            started = time.perf_counter()
            try:
                try:
                    results = await loop.run_in_executor(self._pool, self.fn, [e.item for e in live])
                except Exception as e:  # the whole call failed: every caller gets the error
                    results = [e] * len(live)
                self.stats.batches += 1
                self.stats.items += len(live)
                if self.on_batch:
                    self.on_batch(len(live), time.perf_counter() - started)
                for entry, result in zip(live, results):
                    _settle(entry.future, result)
            except asyncio.CancelledError:  # stopped mid-batch: its callers are told, not left waiting
                for entry in live:
                    _settle(entry.future, Unavailable("the server is stopping; send it again"))
                raise
            except Exception as e:  # the bookkeeping failed (a metric): its callers get the error, the loop goes on
                log.exception("a batch's results could not be handed on")
                for entry in live:
                    _settle(entry.future, e)


def _settle(future: asyncio.Future, result) -> None:
    """``result`` (an exception raised to the caller) into ``future``, unless it is done (gone)."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
