"""The event store's contract and how a URL picks its backend.

An event is (user, item, time, type, weight, optional id, optional recommendation id). ``add``
returns once the events are durable and skips an event whose id was stored before (a retried
request is harmless); ``history`` is a user's latest events, oldest first, as a profile reads
them; ``delete_user`` erases everything of a user, impressions included; ``scan`` reads the log
for export; ``popularity`` sums weights per item over a window. Item changes (the items API's
puts, patches and deletes) are a log of their own, read in commit order. An impression is a list shown
(``recommendation_id``, user, version, arm, items in order): the service logs them, the online
report joins the events to them."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from pydantic_core import to_json

from groundrec.shared.errors import UserError

SCHEMES = ("sqlite", "redis", "rediss")


def user_key(user_id: str) -> str:
    """What an erasure keeps of the user (``EventStore.erasures``): a SHA-256 of the id."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Event:
    user_id: str
    item_id: str
    timestamp: float  # seconds since the epoch
    type: str
    weight: float
    event_id: str | None = None
    # The answer that showed the item, as the client sent it (``POST /events``); the online
    # report checks it against the impressions (same user, item shown) before crediting it.
    recommendation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Impression:
    """One list shown: the answer's ``recommendation_id``, who asked (None when the request
    named no user), when, which version and experiment arm answered, the item ids in the
    order shown, and for an interleaved list the arm each position was drawn from."""

    recommendation_id: str
    user_id: str | None
    timestamp: float
    version: str
    items: tuple[str, ...]
    arm: str | None = None
    teams: tuple[str | None, ...] | None = None  # interleaving: the arm credited for each position (None: neither)
    endpoint: str = "recommend"  # or "search"
    settings: str = "{}"  # the request's settings that matter, as JSON text


@dataclass(frozen=True, slots=True)
class ItemChange:
    """One change to the live catalog (the items API): ``put`` (an upsert: the item's catalog
    columns as sent), ``patch`` (a few fields merged over the item's current ones) or
    ``delete``; ``fields`` is a JSON object's text. ``seq`` is assigned by the store, increasing
    in commit order (0 until stored): a reader that has applied every change up to ``seq`` asks
    for those after it."""

    item_id: str
    op: str  # "put" | "patch" | "delete"
    fields: str = "{}"
    timestamp: float = 0.0
    seq: int = 0


def impression_json(m: Impression) -> str:
    """An impression as the stores keep it: one compact JSON object (pydantic-core's
    serializer: the impression log writes one per answer)."""
    return to_json({"recommendation_id": m.recommendation_id, "user_id": m.user_id, "timestamp": m.timestamp,
                    "version": m.version, "items": list(m.items), "arm": m.arm,
                    "teams": list(m.teams) if m.teams is not None else None, "endpoint": m.endpoint,
                    "settings": m.settings}).decode()


def impression_from_json(text: str) -> Impression:
    d = json.loads(text)
    return Impression(d["recommendation_id"], d["user_id"], d["timestamp"], d["version"], tuple(d["items"]),
                      d["arm"], tuple(d["teams"]) if d["teams"] is not None else None, d["endpoint"], d["settings"])


EVENT_COLUMNS = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.float64()),
                           ("type", pa.string()), ("recommendation_id", pa.string())])
IMPRESSION_COLUMNS = pa.schema([("recommendation_id", pa.string()), ("user_id", pa.string()),
                                ("timestamp", pa.float64()), ("version", pa.string()),
                                ("items", pa.list_(pa.string())), ("arm", pa.string()),
                                ("teams", pa.list_(pa.string()))])


def event_table(rows: Sequence[tuple]) -> pa.Table:
    """Rows of (user, item, timestamp, type, recommendation id) as an ``EVENT_COLUMNS`` table;
    the text as str or as UTF-8 bytes."""
    cols = list(zip(*rows)) if rows else [()] * 5
    raw = bool(rows) and isinstance(rows[0][0], bytes)
    return pa.table([pa.array(c, pa.binary()).cast(f.type) if raw and f.type == pa.string() else pa.array(c, f.type)
                     for c, f in zip(cols, EVENT_COLUMNS)], schema=EVENT_COLUMNS)


def impression_table(bodies: Sequence[bytes | str]) -> pa.Table:
    """Impressions kept as JSON text (``impression_json``), parsed in one call by pyarrow: an
    ``IMPRESSION_COLUMNS`` table, the same values as ``impression_from_json`` (``endpoint`` and
    ``settings`` are not read)."""
    if not bodies:
        return IMPRESSION_COLUMNS.empty_table()
    import pyarrow.json as pj

    data = b"\n".join(bodies) if isinstance(bodies[0], bytes) else "\n".join(bodies).encode()
    return pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
                        parse_options=pj.ParseOptions(explicit_schema=IMPRESSION_COLUMNS,
                                                      unexpected_field_behavior="ignore")).combine_chunks()


class StoreUnavailable(Exception):
    """The store cannot be reached or written now (the reason says why); the caller answers
    503 and the store is tried again on the next request. ``maybe_done``: the call was sent and
    not answered in time (a Redis timeout), so the store may have carried it out all the same."""

    def __init__(self, message: str, maybe_done: bool = False):
        super().__init__(message)
        self.maybe_done = maybe_done

    def reply(self, what: str = "stored") -> str:
        """What a 503 says of it: nothing ``what`` (stored, erased), or, when it may have been, that a retry is safe
        for events with an event_id, item writes and erasures (an event without an id may be stored twice)."""
        if self.maybe_done:
            return (f"the event store did not answer in time and may have {what} it all the same: retry (safe for "
                    f"events with an event_id, item writes and erasures; an event without one may be stored twice): {self}")
        return f"the event store is unavailable, nothing was {what}: {self}"


class EventStore(Protocol):
    url: str

    def add(self, events: Sequence[Event]) -> int:
        """Store ``events`` durably; the number stored (events whose id was stored before are
        skipped)."""

    def history(self, user_id: str, limit: int) -> list[tuple[str, float, float]]:
        """The user's latest ``limit`` events as (item id, timestamp, weight), oldest first."""

    def histories(self, user_ids: Sequence[str], limit: int) -> list[list[tuple[str, float, float]]]:
        """``history`` of each user."""

    async def ahistories(self, user_ids: Sequence[str], limit: int) -> list[list[tuple[str, float, float]]]:
        """``histories`` from an event loop, which it never blocks (the service's request path)."""

    def delete_user(self, user_id: str) -> int:
        """Erase every event of the user (and its event ids); how many events there were. The
        erasure is remembered (``erasures``), so that the export scrubs the user from the days
        only its archive holds."""

    def erasures(self) -> dict[str, float]:
        """Every erasure: ``user_key`` of the user -> its time (seconds since the epoch: the
        latest of when it was made and the user's latest event then; the latest erasure of a
        user erased twice). The export drops the user's events dated up to it. A hash of the
        id, not the id: pseudonymous (an id that can be guessed, an e-mail, can be confirmed)."""

    def scan(self, since: float | None = None, chunk: int = 50_000) -> Iterator[list[Event]]:
        """Every event with a timestamp at or after ``since``, in chunks."""

    def scan_columns(self, since: float | None = None, chunk: int = 50_000, until: float | None = None,
                     named_only: bool = False) -> Iterator[pa.Table]:
        """``scan``'s events (before ``until`` too, when given; only those that name a
        recommendation id with ``named_only``) as ``EVENT_COLUMNS`` tables."""

    def time_span(self, since: float | None = None) -> tuple[float, float] | None:
        """The first and the last event time at or after ``since`` (None: no event); Redis:
        of the log's first and last entries, nearly so."""

    def prune(self, before: float) -> int:
        """Erase every event with a timestamp before ``before`` (retention); how many (the
        export keeps an archive's rows the store no longer holds: ``export._union``)."""

    def popularity(self, since: float | None = None) -> dict[str, float]:
        """Summed event weight per item id over events at or after ``since``."""

    def count(self) -> int:
        """How many events are stored."""

    def add_impressions(self, impressions: Sequence[Impression]) -> int:
        """Store lists shown (an id stored before is skipped); how many were new."""

    def impression(self, recommendation_id: str) -> Impression | None:
        """One list shown, by its id (None: unknown, or erased)."""

    def scan_impressions(self, since: float | None = None, chunk: int = 50_000) -> Iterator[list[Impression]]:
        """Every impression with a timestamp at or after ``since``, in chunks: by time (SQLite)
        or in the order logged (Redis; the service logs as it answers, so nearly by time)."""

    def scan_impression_columns(self, since: float | None = None, chunk: int = 50_000,
                                until: float | None = None) -> Iterator[pa.Table]:
        """``scan_impressions``' lists (before ``until`` too, when given) as ``IMPRESSION_COLUMNS``
        tables."""

    def prune_impressions(self, before: float) -> int:
        """Erase every impression older than ``before`` (their retention); how many."""

    def add_item_changes(self, changes: Sequence[ItemChange]) -> int:
        """Store live-catalog changes durably, in order (their ``seq`` is ignored: the store
        assigns it); how many were stored."""

    def item_changes(self, after: int = 0, limit: int = 10_000) -> list[ItemChange]:
        """The stored changes with ``seq > after``, by ``seq`` ascending, at most ``limit``; a
        change committed later always gets a higher ``seq`` than one already readable."""

    def prune_item_changes(self, through: int) -> int:
        """Erase the changes with ``seq <= through`` (a published version absorbed them), and the
        cached embeddings of item states up to it; how many changes."""

    def add_item_vectors(self, version: str, vectors: Sequence[tuple[str, int, bytes]]) -> int:
        """Cache live items' embeddings in ``version`` (a version id and encoder variant), each
        (item id, the ``seq`` of the item's state, float32 bytes): best effort, without fsync."""

    def item_vectors(self, version: str, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """The cached embeddings of these (item id, seq) in ``version`` (those there are)."""

    def close(self) -> None: ...


def open_store(url: str) -> EventStore:
    """``sqlite:///abs/path/events.db`` (or ``sqlite:relative/path.db``), or
    ``redis://host:port/db``."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from groundrec.shared.events.sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("redis", "rediss"):
        from groundrec.shared.events.redis_store import RedisStore

        return RedisStore(url)
    raise UserError(f"events store {url!r}: use sqlite:///path/events.db or redis://host:port/0")


def open_existing(url: str) -> EventStore:
    """``open_store`` for a command that reads (or prunes) a store: a SQLite path that does not
    exist is refused, naming the forms that work, instead of created empty (a mistyped path
    made the nightly export write nothing and succeed)."""
    missing = missing_file(url)
    if missing is not None:
        raise UserError(f"events store {url!r}: no such file {missing!r}; sqlite:///abs/path/events.db "
                        "(three slashes, then the absolute path) or sqlite:relative/path/events.db")
    return open_store(url)


def missing_file(url: str) -> str | None:
    """The file a SQLite store URL names when it does not exist (opening it would create an
    empty store); None for a store that exists or is not a file."""
    if url.split(":", 1)[0].lower() != "sqlite":
        return None
    from groundrec.shared.events.sqlite import path_of

    return None if path_of(url).is_file() else str(path_of(url))


def is_store_url(text: str) -> bool:
    return ":" in str(text) and str(text).split(":", 1)[0].lower() in SCHEMES
