"""The impression log: every list the service answers (its ``recommendation_id``, who asked,
the version and arm, the items in order) written to the event store after the answer, in
batches, by one background thread, so the request path only appends to a queue.

Best effort by design: a list is shown whether or not it is logged. What is not written (the
queue full, the store down) is counted (``dropped``), never retried forever. ``share`` logs a
sampled part of the users (whole users, by a hash of their id, so per-user metrics stay
whole); ``flush`` writes what is queued now (``POST /events`` calls it before it checks the
ids it was sent, so a click right after its answer finds the list)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque

from pydantic_core import from_json, to_json

from groundrec.online.errors import Unavailable
from groundrec.shared.events.store import Impression, StoreUnavailable

log = logging.getLogger("groundrec.impressions")
WRITE_CHUNK = 2_000  # impressions per store write

WRITE_GRACE_S = 0.5  # how long a due batch of impressions may take to reach the store (``landed_by``)


def new_recommendation_id() -> str:
    """A fresh id for one answer: 32 hex digits, the first 12 the time in milliseconds, the
    rest random (80 bits). Ids made later sort later, so the store's unique index on them
    grows at its end, like the time index, instead of at random places (what a random id's
    insert costs: ``benchmarks/bench_impressions.py``, docs/benchmarks.md)."""
    return f"{time.time_ns() // 1_000_000:012x}{int.from_bytes(os.urandom(10), 'big'):020x}"


def sampled(key: str, share: float) -> bool:
    """Whether ``key`` (a user id, or an answer's id without one) falls in the logged share."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64 < share


def impression_of(recommendation_id: str, user_id: str | None, answer, arm: str | None, settings: dict,
                  endpoint: str = "recommend", teams: list[str | None] | None = None,
                  shown_at: float | None = None) -> Impression:
    """The impression of one answer (built in the logger's thread, off the hot path), stamped
    with the time it was answered (``shown_at``: before any event it earns). ``answer``: a
    ``serving.Shown`` (JSON, item ids, version), or the answer's JSON alone (parsed here)."""
    if isinstance(answer, tuple):
        _, items, version = answer
    else:
        parsed = from_json(answer)  # pydantic-core's parser: several times json.loads's speed
        items, version = tuple(i["item_id"] for i in parsed["items"]), parsed.get("version") or ""
    return Impression(recommendation_id, user_id, time.time() if shown_at is None else shown_at, version, items, arm,
                      tuple(teams) if teams else None, endpoint, to_json(settings).decode())


class ImpressionLog:
    def __init__(self, store, share: float = 1.0, flush_interval_s: float = 0.2, max_pending: int = 50_000,
                 on_written=None):
        """``store``: a callable giving the event store (it may raise StoreUnavailable)."""
        self.store, self.share, self.flush_interval_s, self.max_pending = store, share, flush_interval_s, max_pending
        self.on_written = on_written  # called with each written batch (the live counters)
        self._queue: deque = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._wake = False  # a flush asked the writer to write now (kept until it does: no wake-up is lost)
        self.logged = self.written = self.dropped = 0  # queued; written to the store; not written
        self._done = 0  # queued entries the writer has finished with (written or dropped), in order
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._thread.start()

    def log(self, recommendation_id: str, user_id: str | None, answer, arm: str | None, settings: dict,
            endpoint: str = "recommend", teams: list[str | None] | None = None) -> bool:
        """Queue one answer's impression (sampled by ``share``; ``answer`` as ``impression_of``
        takes it); False when not logged."""
        if not sampled(user_id or recommendation_id, self.share):
            return False
        if len(self._queue) >= self.max_pending:
            with self._cv:
                self.dropped += 1
            return False
        self._queue.append((recommendation_id, user_id, answer, arm, settings, endpoint, teams, time.time()))
        self.logged += 1
        return True

    def landed_by(self, recommendation_id: str, user_id: str | None) -> float:
        """When the list answered as ``recommendation_id`` is in the store at the latest, had a
        worker with this log's settings logged it (the id's time, a flush interval and a write's
        grace): a click another worker takes waits that long for it (``Events``); 0 when it was
        not logged (outside the share: neither the clicking user's lists nor, for a list shown to
        no user id, a search's, its id are sampled) or the id holds no time."""
        if not sampled(recommendation_id, self.share) and not (user_id is not None and sampled(user_id, self.share)):
            return 0.0
        try:
            made = int(recommendation_id[:12], 16) / 1000
        except ValueError:
            return 0.0
        if made > time.time() + WRITE_GRACE_S:  # not an id of ours (clocks of replicas differ less)
            return 0.0
        return made + self.settle_s

    @property
    def settle_s(self) -> float:
        """How long after a list is queued it is in the store at the latest (a flush interval
        and a write's grace), for a worker with this log's settings."""
        return self.flush_interval_s + WRITE_GRACE_S

    def flush(self, timeout_s: float = 2.0) -> None:
        """Return once everything queued before this call is written (or dropped)."""
        target = self.logged
        with self._cv:
            self._wake = True
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._done >= target or self._stop, timeout_s)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._stop:
                    self._cv.wait_for(lambda: self._stop or self._wake, self.flush_interval_s)
                self._wake = False
                stop = self._stop
            done = self._write_queued()
            with self._cv:
                self._done += done
                self._cv.notify_all()
            if stop:
                return

    def _write_queued(self) -> int:
        """Write everything queued; how many entries were taken."""
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        if not batch:
            return 0
        impressions, done = [], 0  # done: written in full (chunks before a failure stay written)
        try:
            impressions = [impression_of(*entry) for entry in batch]
            store = self.store()
            for start in range(0, len(impressions), WRITE_CHUNK):  # events' commits never wait behind a huge one
                store.add_impressions(impressions[start:start + WRITE_CHUNK])
                done = min(start + WRITE_CHUNK, len(impressions))
        except (StoreUnavailable, Unavailable) as e:  # the store's own, or the service's (``Events.store``)
            log.warning("%d impressions not logged: %s", len(batch) - done, e)
        except Exception:  # a bug must not stop the logger: counted and logged with its traceback
            log.exception("%d impressions not logged", len(batch) - done)
        with self._cv:
            self.dropped += len(batch) - done
        self.written += done
        if self.on_written is not None and done:
            self.on_written(impressions[:done])
        return len(batch)
