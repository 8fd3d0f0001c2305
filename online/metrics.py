"""The service's Prometheus metrics, one registry per app; with ``--workers N`` every worker's
aggregated (prometheus_client's multiprocess mode: ``serve`` gives the workers a folder in
``PROMETHEUS_MULTIPROC_DIR``), so a scrape answered by any worker counts them all."""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from groundrec.shared import artifact

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLLOW_S = 1.0  # how stale a worker's queue depth may be in a scrape with several workers


def forget_dead_workers() -> None:
    """A new worker's start: the live gauges of workers gone (killed, replaced) are dropped."""
    folder = os.environ.get(MULTIPROC_ENV)
    for f in Path(folder).glob("gauge_live*_*.db") if folder else ():
        pid = int(f.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # alive, another user's
            pass


class ServiceMetrics:
    def __init__(self):
        self._followed: list = []  # (gauge, read): written every FOLLOW_S with several workers
        r = self.registry = CollectorRegistry()
        self.requests = Counter("groundrec_requests_total", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("groundrec_request_seconds", "request latency", ["endpoint"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        # Gauges with several workers: each worker's (a pid label) or their sum, as each says.
        self.version = Gauge("groundrec_version_info", "the serving version (value 1)", ["version"], registry=r,
                             multiprocess_mode="liveall")
        self.reloads = Counter("groundrec_reloads_total", "versions loaded", registry=r)
        self.reload_failures = Counter("groundrec_reload_failures_total", "versions rejected", registry=r)
        self.version_created = Gauge("groundrec_version_created_timestamp_seconds",
                                     "when the serving version was published (alert on its age)", registry=r,
                                     multiprocess_mode="liveall")
        self.queue_depth = Gauge("groundrec_queue_depth", "requests waiting for a retrieval batch", registry=r,
                                 multiprocess_mode="livesum")
        self.batch_size = Histogram("groundrec_batch_size", "requests scored together", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_seconds = Histogram("groundrec_batch_seconds", "compute time of one batch", registry=r,
                                       buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
        self.shed = Counter("groundrec_shed_total", "requests refused with 503 because the queue was full", registry=r)
        self.gone = Counter("groundrec_client_gone_total", "requests dropped because the client disconnected", registry=r)
        self.threads = Gauge("groundrec_compute_threads", "threads of each native thread pool in the process that "
                             "scores (the compute process, or this one)",
                             ["pool"], registry=r, multiprocess_mode="liveall")
        self.live_encoded = Counter("groundrec_live_items_encoded_total", "live items' texts this server encoded "
                                    "(not found among the embeddings kept in the event store)", registry=r)

        # Online evaluation, live: what was shown and what it earned (the online report has the rest).
        self.impressions = Counter("groundrec_impressions_total", "lists shown and logged", ["version", "arm"],
                                   registry=r)
        self.impressions_dropped = Gauge("groundrec_impressions_dropped", "lists shown but not logged since the "
                                         "server started (queue full or event store down)", registry=r,
                                         multiprocess_mode="livesum")
        self.attributed = Counter("groundrec_attributed_events_total", "events sent with the recommendation_id of "
                                  "a list that showed their item to their user", ["version", "arm", "type"], registry=r)
        self.unattributed = Counter("groundrec_unattributed_events_total", "events sent with a recommendation_id "
                                    "that is unknown, of another user, or did not show the item", registry=r)

    def impressions_written(self, impressions) -> None:
        counts = collections.Counter((m.version, m.arm or "") for m in impressions)  # one labelled inc per (version, arm)
        for labels, n in counts.items():
            self.impressions.labels(*labels).inc(n)

    def follow(self, gauge: Gauge, read) -> None:
        """``gauge`` reads ``read()`` when scraped; with several workers (whose scrape reads
        the files, not this process) written there every ``FOLLOW_S`` by a thread instead."""
        if not os.environ.get(MULTIPROC_ENV):
            gauge.set_function(read)
            return
        self._followed.append((gauge, read))
        if len(self._followed) == 1:
            def run():
                while True:
                    for g, f in list(self._followed):
                        g.set(f())
                    time.sleep(FOLLOW_S)

            threading.Thread(target=run, name="groundrec-metrics", daemon=True).start()

    def exposition(self) -> bytes:
        """What /metrics answers: this process's metrics, or every worker's when there are several."""
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def loaded(self, version_id: str) -> None:
        for labels in list(self.version._metrics):  # 0 first: a worker's file keeps what clear() forgets
            self.version.labels(*labels).set(0)
        self.version.clear()
        self.version.labels(version_id).set(1)
        self.version_created.set(artifact.created_at(version_id) or 0)
        self.reloads.inc()

    def set_threads(self, pools: dict[str, int]) -> None:
        for pool, n in pools.items():
            self.threads.labels(pool).set(n)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
