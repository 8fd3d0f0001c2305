"""The live catalog's changes checked against a served version before anything is stored: the
items API refuses (4xx, naming it) what ``online/live`` could not apply; and a change stored
all the same (checked against other versions: another worker's, before a rollback) skipped by
the version that cannot take it, not blocking every change after it."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Callable

import pyarrow as pa

from groundrec.online.errors import NotFound, Unprocessable
from groundrec.shared.live_items import CONTROL, catalog_columns
from groundrec.shared.text import item_text

log = logging.getLogger("groundrec.serve")
# An item's own fault when applied (a value its column cannot hold, a change the version's
# checks refuse, a text to embed on a version published without its text encoder): the item
# is skipped by that version, logged. Anything else (a dead compute process, the store) fails
# the whole apply, which is tried again (and refuses a swap to that version).
ITEM_ERRORS = (Unprocessable, pa.ArrowException)


@contextmanager
def remembered(live: dict, items: list, lock):
    """``items`` kept in ``live`` (id -> item: what a compute process started later is given)
    while they are applied; put back as they were when the version refuses them (an item's
    fault), or every child started later would fail on them too."""
    with lock:
        before = {item.item_id: live.get(item.item_id) for item in items}
        live.update((item.item_id, item) for item in items)
    try:
        yield
    except ITEM_ERRORS:
        with lock:
            for item_id, old in before.items():
                if old is None:
                    live.pop(item_id, None)
                else:
                    live[item_id] = old
        raise


def apply_or_skip(apply: Callable[[list], object], items: list, version_id: str) -> None:
    """``apply(items)``; when that fails on an item's own fault, each item alone, those that
    fail skipped and logged."""
    try:
        apply(items)
        return
    except ITEM_ERRORS:
        pass
    for item in items:
        try:
            apply([item])
        except ITEM_ERRORS as e:
            log.error("live item %r (change %s) skipped by version %s, which cannot take it: %s: %s",
                      item.item_id, item.seq, version_id, type(e).__name__, e)


def check_changes(retriever, changes: list[tuple[str, str, dict]], must_exist: bool = True) -> None:
    """Refuse what a version cannot take, naming it: a column its item table does not have or
    the job derives (``Unprocessable``), a value of the wrong type for its column, and with
    ``must_exist`` (the current version; not an experiment's pinned arm, which may predate the
    item or lack the encoder: it skips such a change, logged) a change that needs its text
    embedded on a version without the ONNX text encoder and a patch or a delete of an item that
    does not exist (``NotFound``). Nothing is stored before this passes."""
    v, live = retriever.v, retriever.live
    allowed = set(catalog_columns(v.items.column_names, v.manifest.id_column)) | set(CONTROL)
    schema = v.items.schema
    for item_id, op, fields in changes:
        unknown = sorted(set(fields) - allowed)  # named first: a misspelt text column left the item no text
        if unknown:
            raise Unprocessable(f"item {item_id!r}: unknown column(s) {unknown}; the columns an item may have: "
                                f"{sorted(allowed)}")
        exists = item_id in v.row_of and not (live is not None and item_id in live.deleted)
        # a PUT gives the item's columns whole (its text embedded anew), a patch of a catalog column may change it
        if must_exist and retriever.encoder is None and needs_text(op, fields):
            raise Unprocessable(f"item {item_id!r}: version {v.path.name} has no ONNX text encoder to embed it "
                                "(published without export); only patches of hidden and available_until, and "
                                "deletes, can be applied")
        if op in ("patch", "delete") and not exists and must_exist:
            raise NotFound(f"no item {item_id!r} to {op}: PUT it first (it is neither in version "
                           f"{v.path.name} nor a live item)")
        image = v.manifest.catalog_image_column
        if op == "put" and not item_text(v.manifest.text_template, fields, v.manifest.catalog_text_columns) \
                and not fields.get(image):  # the next job would leave it out too
            raise Unprocessable(f"item {item_id!r} has nothing to embed: its text columns "
                                f"{v.manifest.catalog_text_columns} are empty and it has no {image!r}")
        typed = {c: val for c, val in fields.items() if c in schema.names}
        for column, value in typed.items():
            if not held(value, schema.field(column).type):
                raise Unprocessable(f"item {item_id!r}: column {column!r} holds {schema.field(column).type}, "
                                    f"not {value!r}")


def held(value, kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` holds ``value`` as sent: Arrow converts it, and what it
    stores still says the same (not 19 for 19.99 in an integer column, nor ['x'] for 'x' in a
    list column; a float column's own rounding, 0.1 as float32, is its precision, not a change)."""
    try:
        stored = pa.array([value], kind)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return False
    if isinstance(value, bool) and not pa.types.is_boolean(kind):
        return False  # true is no price (Arrow stores it as 1.0)
    if isinstance(value, float) and (pa.types.is_integer(kind) or pa.types.is_temporal(kind)):
        return value.is_integer()  # not cut to a whole number (of the column's unit)
    if pa.types.is_floating(kind) and isinstance(value, int | float) and not isinstance(value, bool):
        return math.isfinite(stored)  # 1e300 is no float32 (inf)
    return not pa.types.is_nested(kind) or isinstance(value, (list, dict)) or value is None


def needs_text(op: str, fields: dict) -> bool:
    """Whether a change is embedded anew: a PUT gives the item whole, a patch of a catalog column
    may change its text (``hidden`` and ``available_until`` do not)."""
    return op == "put" or (op == "patch" and bool(set(fields) - set(CONTROL)))


def apply_everywhere(backends: list, current, apply: Callable[[object], object]) -> None:
    """``apply(backend)`` for each loaded version. A pinned arm that cannot take the change (a
    process being retired) is logged and skipped, never keeping
    it from the others (the current version last of all, and a server's writes answered 4xx
    for a change already durable); the current version's failure is raised once every other
    version has had the change."""
    failed = None
    for backend in backends:
        try:
            apply(backend)
        except Exception as e:
            if backend is current:
                failed = e
            else:
                log.error("live items not applied to the pinned version %s: %s: %s", backend.version_id,
                          type(e).__name__, e)
    if failed is not None:
        raise failed
