"""``groundrec online report``: read the event store's events and impressions as two streams,
attribute, tally, compute and write the report. Settings are checked here, at the edge."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from pydantic import Field, field_validator

from groundrec.online.report import report as files
from groundrec.online.report.attribution import AttributionCounts, attribute
from groundrec.online.report.metrics import compute
from groundrec.online.report.tally import Tally
from groundrec.shared.config import StrictModel
from groundrec.shared.errors import UserError
from groundrec.shared.events.store import is_store_url, open_store


class ReportConfig(StrictModel):
    events: str  # the event store's URL
    out: Path
    since: float | None = None  # seconds since the epoch; None: the whole log
    window_s: float = Field(1800.0, gt=0)  # an event without an id: the list shown this long before it, at most
    id_window_s: float = Field(7 * 86_400.0, gt=0)  # an id is looked up among lists shown this long before
    purchase_types: list[str] = Field(default_factory=lambda: ["purchase"], min_length=1)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    seed: int = 0
    chunk: int = Field(50_000, ge=100)  # rows read from the store at a time

    @field_validator("events")
    @classmethod
    def _store_url(cls, url: str) -> str:
        if not is_store_url(url):
            raise UserError(f"--events {url!r}: give the event store's URL, sqlite:///path/events.db or "
                            "redis://host:port/0")
        if url.lower().startswith("sqlite:"):
            from groundrec.shared.events.sqlite import path_of

            if not path_of(url).is_file():  # opening it would create an empty store
                raise UserError(f"--events {url!r}: no such file; give the store the service writes "
                                "(groundrec serve --events, default ARTIFACTS/events/events.db)")
        return url


def run(cfg: ReportConfig) -> dict:
    """Compute the report and write its files; the results (as in ``results.json``)."""
    started = time.perf_counter()
    counts = AttributionCounts()
    tally = Tally(cfg.purchase_types)
    back = None if cfg.since is None else cfg.since - max(cfg.window_s, cfg.id_window_s)
    store = open_store(cfg.events)
    try:
        stream = attribute(store.scan(cfg.since, cfg.chunk), store.scan_impressions(back, cfg.chunk), counts,
                           since=cfg.since, window_s=cfg.window_s, id_window_s=cfg.id_window_s)
        for batch in stream:
            tally.add(batch)
    finally:
        store.close()
    read_s = time.perf_counter() - started
    results = compute(tally, bootstrap=cfg.bootstrap, alpha=cfg.alpha, seed=cfg.seed)
    results["attribution"] = asdict(counts)
    results["settings"] = cfg.model_dump(mode="json", exclude={"out"})
    results["notes"] = []
    if counts.impressions == 0:
        results["notes"].append("no impressions in the period: is impression logging on in the service "
                                "(and --since before the traffic)?")
    if tally.anonymous:
        results["notes"].append(f"{tally.anonymous} lists were shown to no user id: each counts as its own user.")
    results["timing_s"] = {"read_and_attribute": round(read_s, 3),
                           "statistics": round(time.perf_counter() - started - read_s, 3)}
    results["files"] = files.write(results, cfg.out)
    return results
