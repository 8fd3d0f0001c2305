"""The embedded event store: one SQLite file in WAL mode, safe for several server processes
on one host (SQLite's own locking), nothing to install.

Writes are group-committed: concurrent ``add`` calls (the service's threads, one per
request) queue their events, and whichever finds no commit running writes everything queued
in one transaction and wakes the others, so a commit's fsync is shared by all the requests
that arrived meanwhile. ``synchronous=FULL``: an acknowledged event survives a killed
process and a power loss; a commit that holds only impressions (best effort by design: a list
is shown whether or not it is logged) runs with ``synchronous=NORMAL``, which in WAL mode still
survives a killed process but skips the fsync (a power loss can take its last commits).
``secure_delete`` and a WAL checkpoint after an erasure (``sqlite_schema.scrub_wal``) leave no
byte of an erased user in the files. The live catalog's change log is in ``sqlite_items``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from groundrec.shared.errors import UserError
from groundrec.shared.events.sqlite_items import INSERT_ITEM_VECTOR, ITEMS_SCHEMA, SQLiteItems
from groundrec.shared.events.sqlite_schema import ERASURE, SCHEMA, migrate, scrub_wal
from groundrec.shared.events.store import (Event, Impression, StoreUnavailable, impression_from_json,
                                           impression_json, user_key)

# A row of a user erased at or after its time is not stored (the last two values: the user's key
# and the row's time): written beside the erasure (another worker's late batch), it would be the
# user's data back after DELETE /users answered; checked in the row's own transaction.
NOT_ERASED = "WHERE NOT EXISTS (SELECT 1 FROM erasures WHERE user_key = ? AND at >= ?)"
INSERT = ("INSERT OR IGNORE INTO events (event_id, user_id, item_id, ts, type, weight, recommendation_id) "
          f"SELECT ?, ?, ?, ?, ?, ?, ? {NOT_ERASED}")
INSERT_IMPRESSION = f"INSERT OR IGNORE INTO impressions (recommendation_id, user_id, ts, body) SELECT ?, ?, ?, ? {NOT_ERASED}"
LOSSY = (INSERT_IMPRESSION, INSERT_ITEM_VECTOR)  # a commit of only these runs with synchronous=NORMAL
BUSY_MS = 10_000  # another process's commit is waited for this long
PRUNE_CHUNK = 20_000  # rows a prune erases per transaction (about 0.1 s of the write lock)


def path_of(url: str) -> Path:
    rest = url.split(":", 1)[1]
    path = rest[2:] if rest.startswith("//") else rest  # sqlite:///abs -> /abs; sqlite:rel -> rel
    if not path:
        raise UserError(f"events store {url!r}: no file path (sqlite:///path/events.db)")
    return Path(path)


class _Ticket:
    """Rows waiting for the next group commit: one statement, its rows."""

    __slots__ = ("sql", "rows", "stored", "error", "done")

    def __init__(self, sql: str, rows: list[tuple]):
        self.sql, self.rows, self.stored, self.error, self.done = sql, rows, 0, None, False


class SQLiteStore(SQLiteItems):
    def __init__(self, url: str):
        self.url, self.path = url, path_of(url)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            self._writer.executescript(SCHEMA + ITEMS_SCHEMA)
            migrate(self._writer)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"events store {self.path}: {e}") from None
        self._local = threading.local()
        self._cv = threading.Condition()
        self._pending: list[_Ticket] = []
        self._committing = False
        self._synchronous = "FULL"  # the writer's setting now: changed only between transactions

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    # --- writes: group commit -----------------------------------------------------------
    def add(self, events: Sequence[Event]) -> int:
        return self._write(INSERT, [(e.event_id, e.user_id, e.item_id, e.timestamp, e.type, e.weight,
                                     e.recommendation_id, user_key(e.user_id), e.timestamp) for e in events])

    def add_impressions(self, impressions: Sequence[Impression]) -> int:
        return self._write(INSERT_IMPRESSION, [(m.recommendation_id, m.user_id, m.timestamp, impression_json(m),
                                                user_key(m.user_id) if m.user_id else None, m.timestamp)
                                               for m in impressions])

    def _write(self, sql: str, rows: list[tuple]) -> int:
        if not rows:
            return 0
        ticket = _Ticket(sql, rows)
        with self._cv:
            self._pending.append(ticket)
            while not ticket.done and self._committing:
                self._cv.wait()
            if ticket.done:
                return self._outcome(ticket)
            self._committing, batch, self._pending = True, self._pending, []
        try:
            self._commit(batch)
        finally:
            with self._cv:
                self._committing = False
                self._cv.notify_all()
        return self._outcome(ticket)

    @staticmethod
    def _outcome(ticket: _Ticket) -> int:
        if ticket.error is not None:
            raise StoreUnavailable(f"events store: {ticket.error}")
        return ticket.stored

    def _commit(self, batch: list[_Ticket]) -> None:
        conn = self._writer
        try:
            self._synchronous_set("NORMAL" if all(t.sql in LOSSY for t in batch) else "FULL")
            conn.execute("BEGIN IMMEDIATE")
            for ticket in batch:
                before = conn.total_changes
                conn.executemany(ticket.sql, ticket.rows)
                ticket.stored = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException as e:  # whatever failed (a row sqlite3 cannot bind too): nothing stored, every ticket told
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # else the lock stayed held and the next BEGIN failed
            except sqlite3.Error:
                pass
            for ticket in batch:
                ticket.stored, ticket.error = 0, e
            if not isinstance(e, Exception):
                raise
        finally:
            for ticket in batch:
                ticket.done = True

    def _synchronous_set(self, level: str) -> None:
        """The writer's ``synchronous`` for its next transaction (set only when it changes)."""
        if level != self._synchronous:
            self._writer.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def delete_user(self, user_id: str) -> int:
        """The user's events and the lists shown to them, in one transaction; the erasure is
        remembered first (``erasures``: a crash between leaves it remembered, never forgotten)."""
        latest = self._query("SELECT max(ts) FROM events WHERE user_id = ?", (user_id,))[0][0]
        at = max(time.time(), latest if latest is not None else 0.0)  # an event dated ahead goes too
        self._erase(ERASURE, (user_key(user_id), at), scrub=False)
        return self._erase("DELETE FROM events WHERE user_id = ?", (user_id,),
                           "DELETE FROM impressions WHERE user_id = ?")

    def erasures(self) -> dict[str, float]:
        return {key: float(at) for key, at in self._query("SELECT user_key, at FROM erasures")}

    def prune(self, before: float) -> int:
        return self._erase_in_chunks("events", before)

    def prune_impressions(self, before: float) -> int:
        return self._erase_in_chunks("impressions", before)

    def _erase_in_chunks(self, table: str, before: float) -> int:
        """The rows of ``table`` older than ``before``, ``PRUNE_CHUNK`` a transaction: the
        service's writes wait for one chunk at most, never for the whole prune (a first prune of
        millions of rows held the lock past every other process's busy timeout: 503s)."""
        total, n = 0, PRUNE_CHUNK
        while n == PRUNE_CHUNK:
            n = self._erase(f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE ts < ? "
                            f"LIMIT {PRUNE_CHUNK})", (before,), scrub=False)
            total += n
        scrub_wal(self.path)
        return total

    def _erase(self, sql: str, args: tuple, *more: str, scrub: bool = True) -> int:
        """Run ``sql`` (and ``more`` statements with the same arguments) in one transaction;
        the rows the first erased."""
        with self._cv:  # no group commit in flight: the erasure is its own transaction
            while self._committing:
                self._cv.wait()
            self._committing = True
        conn = self._writer
        try:
            self._synchronous_set("FULL")  # an erasure is durable like an event
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute(sql, args).rowcount
            for other in more:
                conn.execute(other, args)
            conn.execute("COMMIT")
        except BaseException as e:  # whatever failed: rolled back, or every later write found a transaction open
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(e, sqlite3.Error):
                raise StoreUnavailable(f"events store: {e}") from None
            raise
        finally:
            with self._cv:
                self._committing = False
                self._cv.notify_all()
        if scrub:  # the WAL's copies of the erased pages go too (now, or once readers let go)
            scrub_wal(self.path)
        return n

    # --- reads --------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._reader().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreUnavailable(f"events store: {e}") from None

    def history(self, user_id: str, limit: int) -> list[tuple[str, float, float]]:
        rows = self._query("SELECT item_id, ts, weight FROM events WHERE user_id = ? ORDER BY ts DESC, seq DESC "
                           "LIMIT ?", (user_id, limit))
        return rows[::-1]

    def histories(self, user_ids: Sequence[str], limit: int) -> list[list[tuple[str, float, float]]]:
        return [self.history(u, limit) for u in user_ids]

    async def ahistories(self, user_ids: Sequence[str], limit: int) -> list[list[tuple[str, float, float]]]:
        # In a thread: a read can wait on a lock (busy_timeout) in rare WAL states.
        return await asyncio.to_thread(self.histories, user_ids, limit)

    def scan(self, since: float | None = None, chunk: int = 50_000) -> Iterator[list[Event]]:
        yield from self._scan("SELECT user_id, item_id, ts, type, weight, event_id, recommendation_id FROM events "
                              "WHERE ts >= ? ORDER BY ts, seq", since, chunk, lambda r: Event(*r))

    def scan_impressions(self, since: float | None = None, chunk: int = 50_000) -> Iterator[list[Impression]]:
        yield from self._scan("SELECT body FROM impressions WHERE ts >= ? ORDER BY ts, seq", since, chunk,
                              lambda r: impression_from_json(r[0]))

    def scan_columns(self, since: float | None = None, chunk: int = 50_000, until: float | None = None,
                     named_only: bool = False):
        # Each chunk's columns concatenated by SQLite, split by numpy: no Python object per row.
        from groundrec.shared.events.sqlite_columns import event_columns

        yield from event_columns(self._connect, since, chunk, until, named_only)

    def time_span(self, since: float | None = None) -> tuple[float, float] | None:
        lo, hi = self._query("SELECT min(ts), max(ts) FROM events WHERE ts >= ?",
                             (since if since is not None else float("-inf"),))[0]
        return None if lo is None else (lo, hi)

    def scan_impression_columns(self, since: float | None = None, chunk: int = 50_000, until: float | None = None):
        # A chunk's JSON joined by SQLite, parsed in one call by pyarrow: no Python object per row.
        from groundrec.shared.events.sqlite_columns import impression_columns

        yield from impression_columns(self._connect, since, chunk, until)

    def _scan(self, sql: str, since: float | None, chunk: int, make, whole=None, until: float | None = None,
              raw: bool = False):
        """Rows of ``sql`` (its arguments: ``since``, then ``until`` if it takes two) in chunks:
        ``make`` of each row, or ``whole`` of each chunk's rows; ``raw``: text as UTF-8 bytes
        (no str per value)."""
        args = (since if since is not None else float("-inf"),)
        if sql.count("?") == 2:
            args += (until if until is not None else float("inf"),)
        try:
            conn = self._connect()
            if raw:
                conn.text_factory = bytes
            cur = conn.execute(sql, args)
            while rows := cur.fetchmany(chunk):
                yield whole(rows) if whole is not None else [make(r) for r in rows]
        except sqlite3.Error as e:
            raise StoreUnavailable(f"events store: {e}") from None

    def impression(self, recommendation_id: str) -> Impression | None:
        rows = self._query("SELECT body FROM impressions WHERE recommendation_id = ?", (recommendation_id,))
        return impression_from_json(rows[0][0]) if rows else None

    def popularity(self, since: float | None = None) -> dict[str, float]:
        return dict(self._query("SELECT item_id, SUM(weight) FROM events WHERE ts >= ? GROUP BY item_id",
                                (since if since is not None else float("-inf"),)))

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def close(self) -> None:
        self._writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
