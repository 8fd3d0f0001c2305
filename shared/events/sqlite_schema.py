"""The SQLite store's file: its schema, bringing a store written by older code to it in place,
and scrubbing the write-ahead log after an erasure (``scrub_wal``), so that no byte of an erased
user stays in the files."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("groundrec.events")
SCRUB_BUSY_S = 0.05  # how long one scrub waits for readers (it holds the write lock meanwhile)
SCRUB_FOR_S = 600.0  # how long a scrub a reader blocks is tried again, once a second

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    weight REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY,
    recommendation_id TEXT NOT NULL UNIQUE,
    user_id TEXT,
    ts REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_by_time ON impressions (ts);
CREATE TABLE IF NOT EXISTS erasures (
    user_key TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""
# An erasure remembered (``EventStore.erasures``): the user's key and when, the latest kept
ERASURE = ("INSERT INTO erasures (user_key, at) VALUES (?, ?) "
           "ON CONFLICT(user_key) DO UPDATE SET at = max(at, excluded.at)")
# Columns added after a store was first written: (table, column, type), added in place on open.
MIGRATIONS = [("events", "recommendation_id", "TEXT")]
# Indexes older stores have and this schema dropped: impressions by user (each impression's
# insert at a random place of it cost more than the rest of the insert; erasing a user scans
# the impressions instead, docs/operations.md).
DROPPED_INDEXES = ["impressions_by_user"]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by older code to this schema, in place (new tables are created
    by SCHEMA; new columns of old tables are added here)."""
    for table, column, kind in MIGRATIONS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as e:  # another process migrated it between the check and now
                if "duplicate column" not in str(e):
                    raise
    for index in DROPPED_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {index}")


def _scrubbed(path: Path) -> bool:
    """A TRUNCATE checkpoint on a connection of its own: the WAL copied into the database and
    emptied; False while a reader's snapshot (an export, a report) still needs the WAL."""
    try:
        conn = sqlite3.connect(path, timeout=SCRUB_BUSY_S, isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def scrub_wal(path: Path) -> bool:
    """Empty the WAL after an erasure; True when done now. While a reader holds an old snapshot
    it cannot be: tried again in the background once a second (each try holds the write lock
    at most ``SCRUB_BUSY_S``, never the store's writers for a reader's whole read)."""
    if _scrubbed(path):
        return True
    key = str(Path(path).resolve())
    with _SCRUBBING_LOCK:
        if key in _SCRUBBING:  # one scrubber a file: it empties the WAL of every erasure before it
            _SCRUBBING[key][0] = time.monotonic() + SCRUB_FOR_S  # and tries for longer,
            _SCRUBBING[key][1] += 1  # and once more after the try in flight (it may have begun before this erasure)
            return False
        _SCRUBBING[key] = [time.monotonic() + SCRUB_FOR_S, 0]

    def again() -> None:
        while True:
            time.sleep(1.0)
            with _SCRUBBING_LOCK:
                _SCRUBBING[key][1] = 0  # an erasure from now on is this try's or the next's
            try:
                scrubbed = _scrubbed(path)
            except BaseException:  # unregistered, so the next erasure starts a scrubber of its own
                with _SCRUBBING_LOCK:
                    del _SCRUBBING[key]
                raise
            with _SCRUBBING_LOCK:  # done, checked and unregistered at once: a later erasure finds no scrubber
                until, since = _SCRUBBING[key]
                if (scrubbed and not since) or (not scrubbed and time.monotonic() >= until):
                    del _SCRUBBING[key]
                    break
        if not scrubbed:
            log.warning("events store %s: a reader kept the write-ahead log for %.0f s after an erasure; the "
                        "erased rows stay in it until the next erasure or prune", path, SCRUB_FOR_S)

    threading.Thread(target=again, name="groundrec-wal-scrub", daemon=True).start()
    return False


_SCRUBBING: dict[str, list] = {}  # file -> [until when its one background scrubber tries, erasures since its try]
_SCRUBBING_LOCK = threading.Lock()
