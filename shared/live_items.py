"""The live catalog: what the items API's changes (``ItemChange``: put, patch, delete) make of
an item, folded in commit order, and the row an item then has. The one rule the service
(``online/live``, ``online/catalog``) and the next job (``--live-items``) apply them by.

A PUT gives an item's catalog columns whole (an upsert: columns it leaves out are empty); a
PATCH changes the fields it names over what the item has (the version's row, or an earlier
PUT); a DELETE removes it. ``hidden`` and ``available_until`` (seconds since the epoch) say
whether an item may be shown, not what it is: a hidden, expired or deleted item is in no answer.
The columns the job derives (grounded ``vlm_*`` fields, the embedded ``text``, image checksums,
window counts) are never sent: a changed item keeps its grounded fields unless its image changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTROL = ("hidden", "available_until")  # whether an item may be shown
IMAGE = "image"  # the catalog's image column: a change of it drops the grounded fields
# Columns the job adds to a version's item table (besides ``vlm_*``): never sent by a client.
DERIVED = frozenset({"image_uri", "image_sha256", "parse_ok", "parse_error", "from_cache", "grounded", "ground_error",
                     "ground_seconds", "text", "window_interactions", "recent_interactions", "first_seen",
                     *CONTROL})


GROUNDED = frozenset({"image_uri", "image_sha256", "parse_ok", "parse_error", "from_cache", "grounded",
                      "ground_error", "ground_seconds"})  # with ``vlm_*``: what the job reads from the image


def derived(column: str) -> bool:
    """Whether the job, not the catalog, writes ``column``."""
    return column.startswith("vlm_") or column in DERIVED


def grounded(column: str) -> bool:
    """Whether the job derives ``column`` from the item's image (gone when the image changes)."""
    return column.startswith("vlm_") or column in GROUNDED


def catalog_columns(columns: Iterable[str], id_column: str = "item_id") -> list[str]:
    """The columns a client may send for an item of a version whose item table has ``columns``."""
    return [c for c in columns if c != id_column and not derived(c)]


@dataclass(frozen=True)
class LiveItem:
    """An item as the live catalog's changes left it. ``whole``: ``fields`` are its catalog
    columns entire (a PUT); else only the fields patched over the version's row. ``first_seen``:
    the time of its first PUT (None when it was only patched)."""

    item_id: str
    fields: dict = field(default_factory=dict)
    whole: bool = False
    first_seen: float | None = None
    updated: float = 0.0
    seq: int = 0
    deleted: bool = False

    def shown(self, now: float) -> bool:
        """Whether any answer may hold it at ``now``."""
        return not self.deleted and shown(self.fields, now)


def shown(fields: Mapping, now: float) -> bool:
    """A row's (or a live item's) ``hidden`` and ``available_until`` at ``now``."""
    if fields.get("hidden"):
        return False
    until = fields.get("available_until")
    return until is None or (isinstance(until, float | int) and not math.isnan(until) and until > now)


def epoch_seconds(value) -> float | None:
    """An ``available_until`` as seconds since the epoch: a finite number (seconds), or an ISO
    8601 time (UTC when it names no zone); None stays None. ValueError for anything else. The
    items API and the catalog file's own column read it so."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            when = float(value)
        except OverflowError:
            when = math.nan
        if math.isfinite(when):
            return when
    if isinstance(value, str):
        import datetime as dt

        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
        except ValueError:
            pass
    raise ValueError(f"available_until must be seconds since the epoch or an ISO 8601 time, not {value!r}")


def fold(state: dict[str, LiveItem], changes: Iterable) -> list[str]:
    """Apply ``changes`` (``ItemChange``s, by seq ascending) to ``state`` (id -> LiveItem), in
    place; the ids changed, each once, in the order first changed. A patch of a deleted item
    leaves it deleted (a PUT brings it back)."""
    changed: dict[str, None] = {}
    for c in changes:
        before = state.get(c.item_id)
        alive = before is not None and not before.deleted
        if c.op == "delete":
            state[c.item_id] = LiveItem(c.item_id, {}, True, before.first_seen if before else None, c.timestamp,
                                        c.seq, deleted=True)
        elif c.op == "patch" and before is not None and before.deleted:
            continue
        else:
            sent = json.loads(c.fields)
            if c.op == "put":
                fields, whole = sent, True
                first = before.first_seen if alive and before.first_seen is not None else c.timestamp
            else:  # patch
                fields = {**(before.fields if alive else {}), **sent}
                whole, first = alive and before.whole, before.first_seen if alive else None
            state[c.item_id] = LiveItem(c.item_id, fields, whole, first, c.timestamp, c.seq)
        changed[c.item_id] = None
    return list(changed)


def image_changed(item: LiveItem, base: Mapping | None, column: str = IMAGE) -> bool:
    """Whether the item's image (the catalog's ``column``) is not the one its published row
    (``base``) was grounded from."""
    if base is None:
        return False
    image = item.fields.get(column) if item.whole else item.fields.get(column, base.get(column))
    return image != base.get(column)


def record(item: LiveItem, base: Mapping | None, columns: Iterable[str], id_column: str = "item_id",
           image_column: str = IMAGE, schema=None) -> dict:
    """The item's row over ``columns`` (a version's item table): a PUT's fields over an empty
    row, a patch's over ``base`` (its row in the version); the derived columns from ``base``
    (grounded fields, unless the image changed), ``text`` left for the caller to fill. With
    ``schema`` (the table's pyarrow schema) each field sent is read as its column stores it (a
    price sent as 20 in a float column is 20.0, as the job's template renders it)."""
    row = {c: None for c in columns}
    moved = image_changed(item, base, image_column)
    for c in row:  # a PUT is the item whole: its rules (hidden, available_until) are what it sends, as in fold;
        # what the job derived from its interactions (first_seen, counts) stays, from its image only while it is the same
        if base is not None and (not item.whole or (derived(c) and c not in CONTROL and not (moved and grounded(c)))):
            row[c] = base.get(c)
    if moved:
        for c in row:
            if grounded(c):
                row[c] = None
    row.update({k: v for k, v in item.fields.items() if k in row})
    if schema is not None:
        import pyarrow as pa

        for k in item.fields:
            if k in row and k in schema.names and row[k] is not None:
                row[k] = pa.array([row[k]], schema.field(k).type).to_pylist()[0]
    if id_column in row:
        row[id_column] = item.item_id
    return row


def patched(table, changes: list[tuple[int, dict]], combine_beyond: int = 32):
    """``table`` (a pyarrow Table) with each (row, {column: value}) of ``changes`` written over
    that row, the other rows shared, not copied (a chunk per change; the chunks merged beyond
    ``combine_beyond``). Raises pyarrow's error for a value its column cannot hold."""
    import pyarrow as pa

    for row, values in changes:
        for column, value in values.items():
            i = table.schema.get_field_index(column)
            col = table.column(i)
            chunks = [*col.slice(0, row).chunks, pa.array([value], col.type), *col.slice(row + 1).chunks]
            table = table.set_column(i, table.field(i), pa.chunked_array([c for c in chunks if len(c)], col.type))
    worst = max((table.column(c).num_chunks for c in range(table.num_columns)), default=0)
    return table.combine_chunks() if worst > combine_beyond else table
