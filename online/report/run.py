"""``groundrec online report``: read the event store's events and impressions as two streams,
attribute, tally, compute and write the report. Settings are checked here, at the edge."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, fields
from multiprocessing import get_context
from itertools import chain
from pathlib import Path

from pydantic import Field, field_validator

from groundrec.online.report import report as files
from groundrec.online.report.attribution import ID_WINDOW_S, AttributionCounts, attribute_columns
from groundrec.online.report.metrics import compute
from groundrec.online.report.tally import Tally
from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError
from groundrec.shared.events.store import is_store_url, missing_file, open_store


class ReportConfig(StrictModel):
    events: str  # the event store's URL
    out: Path
    since: float | None = None  # seconds since the epoch; None: the whole log
    window_s: float = Field(1800.0, gt=0)  # an event without an id: the list shown this long before it, at most
    id_window_s: float = Field(ID_WINDOW_S, gt=0)  # an id is looked up among lists shown this long before
    purchase_types: list[str] = Field(default_factory=lambda: ["purchase"], min_length=1)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    seed: int = 0
    chunk: int = Field(50_000, ge=100)  # rows read from the store at a time
    # Processes, each reading its own part of the time range (the same results for any number);
    # the command's default is min(2, CPUs), a caller inside the service keeps to its own.
    workers: int = Field(1, ge=1, le=64)

    @field_validator("events")
    @classmethod
    def _store_url(cls, url: str) -> str:
        if not is_store_url(url):
            raise UserError(f"--events {url!r}: give the event store's URL, sqlite:///path/events.db or "
                            "redis://host:port/0")
        if missing_file(url) is not None:  # opening it would create an empty store
            raise UserError(f"--events {url!r}: no such file; give the store the service writes "
                            "(groundrec serve --events, default ARTIFACTS/events/events.db)")
        return url


class Pool:
    """``cfg.workers - 1`` processes, started when first asked for (by the parts of ``read``,
    then the statistics' bootstraps), shut down on leaving."""

    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def __call__(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers - 1, mp_context=get_context("spawn"))
        return self.pool

    def __enter__(self) -> Pool | None:
        return self if self.workers > 1 else None

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def run(cfg: ReportConfig) -> dict:
    """Compute the report and write its files; the results (as in ``results.json``)."""
    started = time.perf_counter()
    with Pool(cfg.workers) as pool:
        counts, tally = read(cfg, pool)
        read_s = time.perf_counter() - started
        results = compute(tally, bootstrap=cfg.bootstrap, alpha=cfg.alpha, seed=cfg.seed, pool=pool)
    results["attribution"] = asdict(counts)
    results["settings"] = cfg.model_dump(mode="json", exclude={"out", "workers"})  # workers: speed only
    results["notes"] = []
    if counts.impressions == 0:
        results["notes"].append("no impressions in the period: is impression logging on in the service "
                                "(and --since before the traffic)?")
    if results["anonymous_lists"]:
        results["notes"].append(f"{results['anonymous_lists']} lists were shown to no user id (searches, similar, popular "
                                "and latest lists, requests without user_id): left out of every rate and test.")
    results["timing_s"] = {"read_and_attribute": round(read_s, 3),
                           "statistics": round(time.perf_counter() - started - read_s, 3)}
    results["files"] = files.write(results, cfg.out)
    return results


def read(cfg: ReportConfig, pool: Pool | None = None) -> tuple[AttributionCounts, Tally]:
    """Attribute and tally the whole period: in ``cfg.workers`` parts of its time range, this
    process and the pool's one each, when the range is long enough for the overlaps (what a
    part reads of its neighbours': ``max(window_s, id_window_s)`` of lists before it,
    ``window_s`` of events after it and the events naming an id up to the longer window after
    it) to be small."""
    keep = max(cfg.window_s, cfg.id_window_s)
    store = open_store(cfg.events)
    try:
        span = store.time_span(cfg.since) if cfg.workers > 1 else None
    finally:
        store.close()
    if pool is None or span is None or span[1] - span[0] < 3 * keep:
        return read_part(cfg, cfg.since, None)
    step = (span[1] - span[0]) / cfg.workers
    cuts = [cfg.since] + [span[0] + i * step for i in range(1, cfg.workers)] + [None]
    early = [pool().submit(read_part, cfg, a, b) for a, b in zip(cuts[:-2], cuts[1:-1])]
    last = read_part(cfg, cuts[-2], None)  # meanwhile, here
    parts = [f.result() for f in early] + [last]
    counts, tally = parts[0]
    for later_counts, later in parts[1:]:  # a later part's context lists are an earlier part's own
        for f in fields(counts):
            if f.name != "context_impressions":
                setattr(counts, f.name, getattr(counts, f.name) + getattr(later_counts, f.name))
        tally.merge(later)
    return counts, tally


def read_part(cfg: ReportConfig, since: float | None, until: float | None) -> tuple[AttributionCounts, Tally]:
    """The lists shown in [since, until) with what they earned, and the events in that range."""
    counts, tally = AttributionCounts(), Tally(cfg.purchase_types)
    keep = max(cfg.window_s, cfg.id_window_s)
    store = open_store(cfg.events)
    try:
        events = store.scan_columns(since, cfg.chunk, until=None if until is None else until + cfg.window_s)
        if until is not None:  # later events that name an id reach back up to the id window
            events = chain(events, store.scan_columns(until + cfg.window_s, cfg.chunk, until=until + keep,
                                                      named_only=True))
        shown = store.scan_impression_columns(None if since is None else since - keep, cfg.chunk,
                                              until=None if until is None else until + cfg.window_s)
        for batch in attribute_columns(events, shown, counts, since=since, until=until, window_s=cfg.window_s,
                                       id_window_s=cfg.id_window_s):
            tally.add(batch)
    finally:
        store.close()
    return counts, tally
