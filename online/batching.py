"""Micro-batching with admission control, for the service's compute-bound requests.

Concurrent requests are gathered for at most ``max_wait_s`` (or until ``max_batch`` are
waiting) and handed to one function call in one worker thread: on a flat index the item
matrix is then read once per batch instead of once per user, and the event loop stays free
for HTTP parsing and probes. Beyond ``max_queue`` waiting requests a new one is refused at
once (``errors.Overloaded``: 503 with Retry-After) instead of queueing for seconds. A request
whose caller has gone (its future was cancelled) is dropped before it is computed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from groundrec.online.errors import Overloaded


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    dropped_gone: int = 0


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
        # ``worker_init`` runs in the worker thread before its first batch: settings that are
        # per thread, such as OpenMP's thread count (FAISS), must be made there.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="groundrec-batch", initializer=worker_init)

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

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
        self._pool.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, item) -> asyncio.Future:
        """Queue ``item`` and return the future of its result (raises ``Overloaded`` at once
        when the queue is full). Cancel the future to drop the item if it is still waiting."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self.full:
            raise Overloaded(f"{self._queue.qsize()} requests already waiting (max_queue={self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return future

    async def _gather(self) -> list[tuple]:
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
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # done = cancelled: caller gone
            self.stats.dropped_gone += len(batch) - len(live)
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [item for item, _ in live])
            except Exception as e:  # the whole call failed: every caller gets the error
                results = [e] * len(live)
            self.stats.batches += 1
            self.stats.items += len(live)
            if self.on_batch:
                self.on_batch(len(live), time.perf_counter() - started)
            for (_, fut), result in zip(live, results):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
