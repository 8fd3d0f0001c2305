"""Helpers for the benchmark scripts: H&M location, timing, process-tree memory."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

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
    """RSS of a process and all its descendants, from /proc (Ray workers descend from the driver)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
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
