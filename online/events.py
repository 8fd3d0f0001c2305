"""The events API and the histories by user id: what users do is stored durably in the event
store (``shared.events``), and a request with a ``user_id`` gets its history from there.

The store is written and read in the server process (FastAPI's thread pool: a SQLite commit
waits for the disk, a Redis call for the network), never in the compute process, so events
and scoring do not wait for each other. A store that cannot be reached is ``Unavailable``
(503) with the reason, and is tried again on the next request; a history sent in the request
still works."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace

from fastapi.concurrency import run_in_threadpool
from pydantic_core import to_json

from groundrec.online.config import ServeConfig
from groundrec.online.errors import Disabled, Reply, Unavailable, Unprocessable
from groundrec.online.report.attribution import id_in_time, id_time
from groundrec.online.schemas import EventsRequest, HistoryEntry, RecommendRequest, UserQuery, checked_id
from groundrec.shared.artifact import DEFAULT_STRATEGY
from groundrec.shared.errors import UserError
from groundrec.shared.events import Event, EventStore, StoreUnavailable, open_store
from groundrec.shared.scoring import READS_TIME_OR_WEIGHT

log = logging.getLogger("groundrec.serve")

MAX_LANDING_WAIT_S = 1.0  # the most a request of events waits for lists other workers are writing
LANDING_POLL_S = 0.05


class Events:
    def __init__(self, cfg: ServeConfig, serving, metrics=None):
        self.cfg, self.serving = cfg, serving  # serving(): the current Backend (counts unknown items)
        self.metrics = metrics  # the live counters of attributed events (None: not counted)
        self.impressions = None  # the impression log (flushed before ids are checked), when lists are logged
        self.url = cfg.events_url()
        self._store: EventStore | None = None
        self._lock = threading.Lock()
        self.reason = None
        if self.url is None:
            self.reason = ("events are off (serve config events: none)" if cfg.events == "none" else
                           f"events are off: 'events: auto' keeps no store beside artifacts at a URI "
                           f"({cfg.artifacts}); give events: sqlite:///path/events.db or redis://host:port/0")
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def store(self) -> EventStore:
        """The open store, opened on first use and again after a failure (``Unavailable`` while
        it fails)."""
        if self.url is None:
            raise Disabled(self.reason)
        with self._lock:
            if self._store is None:
                try:
                    self._store = open_store(self.url)
                except (StoreUnavailable, UserError) as e:
                    raise Unavailable(f"the event store is unavailable: {e}") from None
            return self._store

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        if self._store is not None:
            self._store.close()

    # --- popularity from the store --------------------------------------------------------
    def follow_popularity(self, holder) -> None:
        """Read the summed event weight per item over ``popularity_window_days`` every
        ``popularity_refresh_s`` and hand it to ``holder`` (the prior and the popular fallback
        then follow what sells now). Until the window holds an event, the serve config's
        ``interactions`` stay in use; a store that fails is tried again next time."""
        if self.url is None or self.cfg.popularity_window_days is None:
            return

        def run():
            while True:
                try:
                    counts = self.store().popularity(since=time.time() - self.cfg.popularity_window_days * 86_400)
                    if counts:
                        holder.set_popularity(counts)
                except Exception as e:  # keep following whatever happens
                    log.warning("popularity from the event store not refreshed: %s", e)
                if self._stop.wait(self.cfg.popularity_refresh_s):
                    return

        self._refresher = threading.Thread(target=run, name="groundrec-popularity", daemon=True)
        self._refresher.start()

    # --- POST /events -------------------------------------------------------------------
    def _events(self, body: EventsRequest) -> list[Event]:
        cfg = self.cfg
        if len(body.events) > cfg.max_events:
            raise Unprocessable(f"{len(body.events)} events, more than max_events={cfg.max_events}")
        now = time.time()
        out = []
        for n, e in enumerate(body.events):
            kind = e.type or cfg.default_event_type
            weight = cfg.event_types.get(kind)
            if weight is None:
                raise Unprocessable(f"events.{n}.type: {kind!r} is not one of {sorted(cfg.event_types)}")
            out.append(Event(e.user_id, e.item_id, now if e.timestamp is None else e.timestamp, kind,
                             weight if e.weight is None else e.weight, e.event_id, e.recommendation_id))
        return out

    def _found(self, events: list[Event]) -> dict:
        """The impression each ``recommendation_id`` of the events names (None: not in the store
        now), each id read once however many events carry it."""
        if not any(e.recommendation_id for e in events):
            return {}
        if self.impressions is not None:
            self.impressions.flush()  # a click right after its answer finds the list
        return self._read([rid for rid in dict.fromkeys(e.recommendation_id for e in events) if rid])

    async def _await_landing(self, found: dict, users: dict) -> None:
        """Read again the ids not found whose list another worker (or replica) may still be
        writing (``ImpressionLog.landed_by``), until each is found or must have landed; the
        whole wait at most ``MAX_LANDING_WAIT_S``, holding no thread between reads (a pool
        thread each: 40 requests with fresh made-up ids stalled every route that needs one)."""
        now = time.time()
        waiting = {rid: self.impressions.landed_by(rid, users[rid]) for rid, m in found.items() if m is None}
        waiting = {rid: t for rid, t in waiting.items() if t > now}
        until = min(max(waiting.values(), default=now), now + MAX_LANDING_WAIT_S)
        while waiting and time.time() < until:
            await asyncio.sleep(LANDING_POLL_S)
            again = await run_in_threadpool(self._read, list(waiting))
            for rid in list(waiting):
                found[rid] = again[rid]
                if found[rid] is not None or waiting[rid] <= time.time():
                    del waiting[rid]

    def _read(self, ids: list[str]) -> dict:
        """The impression of each id (None: not in the store now)."""
        try:
            store = self.store()
            return {rid: store.impression(rid) for rid in ids}
        except StoreUnavailable as e:  # a read, before anything is written
            raise Unavailable(f"the event store is unavailable, nothing was stored: {e}") from None

    def _attributed(self, events: list[Event], found: dict) -> tuple[list[Event], list]:
        """The events with each ``recommendation_id`` kept unless it names a list that is in
        the store and was not shown to that user (nor to no user id: a search's, a similar or
        popular list), did not hold that item or came after the event (``found``: the impression
        each id names; such an id is dropped, and the report credits the event by time: counted,
        not an error), and the impression each id names where it checks out (None elsewhere).
        An id whose list is not in the store yet is kept as sent: another worker's list may land
        after the wait (``_await_landing``), and the report, reading the whole log, credits it
        by id or counts it unverified (dropped here, it was credited by time to whichever list
        of that user's showed the item last)."""
        out, shown = [], []
        for e in events:
            rid = e.recommendation_id
            m = found.get(rid) if rid else None
            ours = m is not None and m.user_id in (None, e.user_id)
            if ours and e.item_id in m.items:
                e = replace(e, timestamp=id_time(m.timestamp, e.timestamp))  # a clock a little behind the list's
            if m is not None and (not ours or e.item_id not in m.items
                                  or not id_in_time(m.timestamp, e.timestamp)):  # the report's rule: by time instead
                e, m = replace(e, recommendation_id=None), None
            out.append(e)
            shown.append(m)
        return out, shown

    def _add(self, events: list[Event], found: dict) -> bytes:
        try:
            sent = sum(e.recommendation_id is not None for e in events)
            events, shown = self._attributed(events, found)
            stored = self.store().add(events)
        except StoreUnavailable as e:
            raise Unavailable(e.reply()) from None
        unattributed = sent - sum(m is not None for m in shown)
        if self.metrics is not None and stored == len(events):  # a retry (duplicates) is not counted again
            for e, m in zip(events, shown):
                if m is not None:
                    self.metrics.attributed.labels(m.version, m.arm or "", e.type).inc()
            self.metrics.unattributed.inc(unattributed)
        try:
            unknown = self.serving().unknown(list({e.item_id for e in events}))
        except Unavailable:
            unknown = None  # no version loaded (or its compute process died): nothing to compare with
        return to_json({"accepted": stored, "duplicates": len(events) - stored, "unknown_items": unknown,
                        "unattributed": unattributed})

    async def handle(self, body: EventsRequest, receive) -> Reply:
        """The hot route's handler: 200 once the events are durable; an error is raised to the
        guard, which answers it (``errors.http_reply``). The store's reads and writes run in the
        thread pool; the wait for lists other workers are writing does not."""
        events = self._events(body)
        found = await run_in_threadpool(self._found, events)
        if self.impressions is not None and any(m is None for m in found.values()):
            await self._await_landing(found, {e.recommendation_id: e.user_id for e in events if e.recommendation_id})
        return 200, await run_in_threadpool(self._add, events, found), []

    # --- /recommend by user id ----------------------------------------------------------
    async def _histories(self, user_ids: list[str]) -> list[list[tuple[str, float, float]]]:
        try:
            store = self._store or await run_in_threadpool(self.store)  # opening may touch the disk
            return await store.ahistories(user_ids, self.cfg.max_seen)  # the profile takes its latest max_history
        except StoreUnavailable as e:
            raise Unavailable(f"the event store is unavailable, so no history by user_id (a history sent "
                              f"in the request still works): {e}") from None

    @staticmethod
    def _entries(q: UserQuery, stored: list[tuple[str, float, float]], default: str) -> list:
        """The stored events as history entries: with their time and weight where the query's
        profile reads them (recency, weighted), with their time alone where the version's
        ``default`` reads it (a content-only version's recency, chosen by its job on unweighted
        interactions: an event type's weight is not in it), bare ids otherwise (the same
        profile, and a query several times cheaper to hand to the compute process)."""
        if q.strategy is None and default in READS_TIME_OR_WEIGHT:  # the version's recency: times, unit weights,
            return [HistoryEntry.model_construct(item_id=i, timestamp=t) for i, t, _ in stored]  # as its job scored it
        if q.strategy in READS_TIME_OR_WEIGHT:
            return [HistoryEntry.model_construct(item_id=i, timestamp=t, weight=w) for i, t, w in stored]
        return [i for i, _, _ in stored]

    async def with_histories(self, body: RecommendRequest | UserQuery, default: str = DEFAULT_STRATEGY):
        """``body`` with each user_id's stored history before the history it sent (``default``:
        the strategy of the version that answers a query naming none)."""
        batch = isinstance(body, RecommendRequest) and body.batch is not None
        queries = body.batch if batch else [body]
        asking = [q for q in queries if q.user_id is not None]
        if not asking:
            return body
        stored = await self._histories([q.user_id for q in asking])
        filled = {id(q): _with_stored(q, self._entries(q, h, default)) for q, h in zip(asking, stored)}
        if batch:
            return body.model_copy(update={"batch": [filled.get(id(q), q) for q in queries]})
        return filled[id(body)]

    # --- DELETE /users/{user_id} --------------------------------------------------------
    async def delete_user(self, user_id: str) -> dict:
        """Every event of the user and every list shown to them: this worker's queued lists are
        written first, and once lists any worker showed before the erasure must have landed
        (``ImpressionLog.settle_s``), the user is erased again (else those came back). The wait
        holds no thread (a second in the shared pool each, 200 erasures stalled every route).
        An id no event can hold (empty, over-long, a control character) is a 422, as ``/events`` answers it."""
        try:
            checked_id(user_id, "user_id", new=False)  # an id stored under the looser rule of before is erased too
        except ValueError as e:
            raise Unprocessable(str(e)) from None
        deleted = await run_in_threadpool(self._erase, user_id, True)
        if self.impressions is not None:
            await asyncio.sleep(self.impressions.settle_s)
            deleted += await run_in_threadpool(self._erase, user_id, False)
        return {"user_id": user_id, "deleted_events": deleted}

    def _erase(self, user_id: str, flush: bool) -> int:
        try:
            if flush and self.impressions is not None:
                self.impressions.flush()
            return self.store().delete_user(user_id)
        except StoreUnavailable as e:
            raise Unavailable(e.reply("erased")) from None


def _with_stored(q: UserQuery, stored: list) -> UserQuery:
    """``q`` with its user's stored entries before the history it sent, counted (``UserQuery._stored``)."""
    filled = q.model_copy(update={"history": stored + q.history})
    filled._stored = len(stored)
    return filled
