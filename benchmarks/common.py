"""Helpers for the benchmark scripts: H&M location, timing, process-tree memory."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HM = Path(os.environ.get("GROUNDREC_HM_DIR", REPO.parent / "shared" / "data" / "hm"))


def require_hm() -> Path:
    if not (HM / "items.parquet").is_file():
        raise SystemExit(f"H&M data not found at {HM}: set GROUNDREC_HM_DIR")
    return HM


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _tree_rss_bytes(root_pid: int) -> int:
    """RSS of a process and all its descendants (Ray workers descend from the driver)."""
    import psutil

    total = 0
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:  # exited while we read
            pass
    return total


class PeakMemory:
    """Samples the RSS of this process tree every ``interval`` seconds; ``peak_gib`` after exit."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30


def start_redis(folder: Path):
    """A durable redis-server (appendonly, appendfsync always) on a free loopback port, data in
    ``folder``: (its process, its URL). Stop it with ``proc.terminate()``."""
    import subprocess

    from groundrec.online.testing import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


async def timed_round(rec, bodies: list, concurrency: int) -> tuple[float, float]:
    """requests/s and p99 latency (s) of one pass over ``bodies`` (requests) through ``rec.answer``
    (a ``Recommender``, in-process) with ``concurrency`` in flight."""
    queue = list(reversed(bodies))
    latencies: list[float] = []

    async def worker():
        while queue:
            body = queue.pop()
            t = time.perf_counter()
            await rec.answer(body)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - start), float(np.percentile(latencies, 99))
