"""The live catalog in the server process: the items API's changes checked, stored durably in
the event store (``ItemChange``, a log of its own) and applied to every loaded version.

A write is answered once its change is durable and this server's compute process and its
standby have applied it: after the store's commit, ``sync`` reads every change not applied yet
(this server's and any other's, in commit order), folds them (``shared.live_items.fold``) and
hands the items they touched to the holder. A thread does the same every ``live_poll_s``, so
changes made through other workers and replicas are applied within that. Concurrent writers
share a sync: whoever holds the lock applies what the others stored meanwhile."""

from __future__ import annotations

import logging
import math
import re
import threading
import time

from pydantic_core import to_json

from groundrec.online.config import ServeConfig
from groundrec.online.errors import Disabled, NotFound, Unavailable, Unprocessable
from groundrec.online.schemas import CONTROL, STORED_BEFORE
from groundrec.shared.events import ItemChange, StoreUnavailable
from groundrec.shared.live_items import LiveItem, epoch_seconds, fold

log = logging.getLogger("groundrec.serve")
BAD_ID, BAD_STORED_ID = re.compile(f"[{CONTROL}]"), re.compile(f"[{STORED_BEFORE}]")
MAX_ID_CHARS = 256
DOT_SEGMENTS = {".", ".."}
ROUTE_TAILS = ("/similar", "/thumbnail")  # the routes after an id (service._catch_alls_last)


def _id(item_id, new: bool = True) -> str:
    """``item_id`` as the items API takes it, else a 422 naming the problem; ``new`` False (a
    patch or a delete): an id the looser rule of before may have stored (``STORED_BEFORE``)."""
    if not isinstance(item_id, str) or not item_id.strip():
        raise Unprocessable(f"item_id must be a non-empty string, not {item_id!r}")
    if len(item_id) > MAX_ID_CHARS:
        raise Unprocessable(f"item_id has {len(item_id)} characters, more than {MAX_ID_CHARS}")
    if (BAD_ID if new else BAD_STORED_ID).search(item_id):
        raise Unprocessable(f"item_id {item_id!r} holds a control character")
    if item_id.endswith(ROUTE_TAILS):  # /items/x%2Fsimilar reaches the server as x's similar items
        raise Unprocessable(f"item_id {item_id!r} ends like the route /items/{{id}}{item_id[item_id.rindex('/'):]}, "
                            f"so no /items/{{id}} path can address it")
    if DOT_SEGMENTS.intersection(item_id.split("/")):  # a client or browser resolves /items/a/../b to /items/b
        raise Unprocessable(f"item_id {item_id!r} holds a '.' or '..' path segment, which no /items/{{id}} path "
                            f"can carry (clients resolve it before sending)")
    return item_id


def _when(item_id: str, value) -> float | None:
    """``available_until`` as seconds since the epoch (``shared.live_items.epoch_seconds``)."""
    try:
        return epoch_seconds(value)
    except ValueError as e:
        raise Unprocessable(f"item {item_id!r}: {e}") from None


def checked_fields(cfg: ServeConfig, item_id: str, fields) -> dict:
    """An item's fields as a flat JSON object of scalars within the limits (``Unprocessable``
    naming the field otherwise), ``available_until`` as epoch seconds."""
    if not isinstance(fields, dict):
        raise Unprocessable(f"item {item_id!r}: the body must be a JSON object of column -> value")
    out = {}
    for column, value in fields.items():
        if isinstance(value, (dict, list)):
            raise Unprocessable(f"item {item_id!r}: column {column!r} holds a {type(value).__name__}; an item is a "
                                "flat object of column values")
        if isinstance(value, str) and len(value) > cfg.max_item_chars:
            raise Unprocessable(f"item {item_id!r}: column {column!r} has {len(value)} characters, more than "
                                f"max_item_chars={cfg.max_item_chars}")
        if isinstance(value, float) and not math.isfinite(value) and column != "available_until":
            raise Unprocessable(f"item {item_id!r}: column {column!r} holds {value}; a number must be finite")
        if column == "hidden" and not isinstance(value, bool) and value is not None:
            raise Unprocessable(f"item {item_id!r}: hidden must be true or false, not {value!r}")
        out[column] = _when(item_id, value) if column == "available_until" else value
    return out


class _Write:
    """One write waiting for its group: its checked changes, then its answer (a dict or the
    error to raise)."""

    __slots__ = ("changes", "answer")

    def __init__(self, changes: list):
        self.changes, self.answer = changes, None


class LiveCatalog:
    def __init__(self, cfg: ServeConfig, events, holder, backend):
        self.cfg, self.events, self.holder = cfg, events, holder
        self.backend = backend  # () -> the current Backend (checks a change before it is stored)
        self.state: dict[str, LiveItem] = {}  # every item the changes touched, as they left it
        self.applied = 0  # the seq of the last change applied
        self.synced = not self.on  # the live catalog read once: until then a removed item could be shown
        self._lock = threading.Lock()
        self._cv = threading.Condition()  # the group of writes in flight
        self._queued: list[_Write] = []
        self._leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def on(self) -> bool:
        return self.events.url is not None

    def write(self, changes: list[tuple[str, str, dict]]) -> dict:
        """Check, store durably and apply (item id, op, fields) changes; what was done.
        Concurrent writes are grouped: whoever finds no group in flight checks, stores and
        applies every write queued meanwhile at once (one round trip to each compute process,
        one commit, one encoding of all their texts), and each write gets its own answer or
        its own error."""
        if not self.on:
            raise Disabled(f"the items API needs the event store: {self.events.reason}")
        if len(changes) > self.cfg.max_items_batch:
            raise Unprocessable(f"{len(changes)} items, more than max_items_batch={self.cfg.max_items_batch}")
        ticket = _Write([(_id(i, op == "put"), op, checked_fields(self.cfg, i, f)) for i, op, f in changes])
        with self._cv:
            self._queued.append(ticket)
            while ticket.answer is None and self._leading:
                self._cv.wait()
            if ticket.answer is None:
                self._leading, group, self._queued = True, self._queued, []
        if ticket.answer is None:
            try:
                self._write_group(group)
            finally:
                with self._cv:
                    self._leading = False
                    self._cv.notify_all()
        if isinstance(ticket.answer, Exception):
            raise ticket.answer
        return ticket.answer

    def _write_group(self, group: list[_Write]) -> None:
        try:
            self.sync()  # a patch of an item put through another worker a moment ago finds it
            self.backend()  # Unavailable when no version is loaded yet
            ok = self._checked(group)
            if not ok:
                return
            now = time.time()
            rows = [ItemChange(i, op, to_json(f).decode(), now) for t in ok for i, op, f in t.changes]
            try:
                self.events.store().add_item_changes(rows)
            except StoreUnavailable as e:
                raise Unavailable(e.reply()) from None
            try:
                self.sync()
            except Exception as e:  # stored: no error may say it was not (a retried DELETE would answer 404)
                raise Unavailable(f"stored durably, not yet applied here ({type(e).__name__}: {e}): the server "
                                  f"applies it as soon as it can (it retries every live_poll_s); sent again, it "
                                  f"is stored again") from None
            for t in ok:
                t.answer = {"accepted": len(t.changes), "applied_through": self.applied}
        except Exception as e:  # the whole group's (no version, the store, the compute process)
            for t in group:
                if t.answer is None:
                    t.answer = e

    def _checked(self, group: list[_Write]) -> list[_Write]:
        """The writes every loaded version can take (an experiment's arms too): all of them in
        one check each when they pass; otherwise each write alone, a refused one answered with
        its own error (nothing of it stored)."""
        backends, current = self.holder.loaded(), self.holder.current
        if current is not None and not any(b is current for b in backends):
            backends = [current, *backends]  # its compute process and standby both dead: checking starts the next
        # a patch or delete needs the item in the current version, not in a pinned arm that predates it
        try:
            for backend in backends:
                backend.check_live(([c for t in group for c in t.changes], backend is current))
            return group
        except (Unprocessable, NotFound) as e:
            if len(group) == 1:
                group[0].answer = e
                return []
        ok = []
        for t in group:
            try:
                for backend in backends:
                    backend.check_live((t.changes, backend is current))
                ok.append(t)
            except (Unprocessable, NotFound) as e:
                t.answer = e
        return ok

    def sync(self) -> int:
        """Apply every stored change not applied yet; how many."""
        if not self.on:
            return 0
        done = 0
        with self._lock:
            while True:
                try:
                    changes = self.events.store().item_changes(after=self.applied)
                except StoreUnavailable as e:
                    raise Unavailable(f"the event store is unavailable: {e}") from None
                if not changes:
                    self.synced = True
                    return done
                touched = fold(self.state, changes)
                self.holder.apply_live([self.state[i] for i in touched])
                self.applied, done = changes[-1].seq, done + len(changes)

    def follow(self) -> None:
        """Apply the changes other servers store, every ``live_poll_s``."""
        if not self.on:
            return

        def run():
            while not self._stop.wait(self.cfg.live_poll_s):
                try:
                    self.sync()
                except Exception as e:  # keep following whatever happens
                    log.warning("live items not synced: %s", e)

        try:
            self.sync()
        except Exception as e:  # the store may come later: the thread keeps trying
            log.warning("live items not applied at start: %s", e)
        self._thread = threading.Thread(target=run, name="groundrec-live-items", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
