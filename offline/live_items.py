"""The live catalog taken in by the next job (``offline run --live-items URL``): every change
the items API stored (``ItemChange``, paged by ``seq``) folded by the service's one rule
(``shared.live_items.fold``) and laid over the catalog file before grounding. A put item is
added or replaced (``record`` over the catalog's columns), a patch changes fields of its
catalog row, a deleted item is left out; ``hidden`` and ``available_until`` become item-table
columns (so the version keeps hiding what they hide). The version's manifest records
``live_items.through``: the service then skips those changes (``online/live``).

Also here: each published item's ``first_seen`` (its first interaction, or a new item's first
PUT when earlier), which ``GET /latest`` orders by."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from groundrec.offline.catalog import CONTROL_TYPES, IMAGE_URI, resolve_image
from groundrec.offline.interactions import Interactions
from groundrec.shared.errors import UserError
from groundrec.shared.events.store import is_store_url, open_existing
from groundrec.shared.live_items import CONTROL, LiveItem, catalog_columns, fold, record

PAGE = 10_000  # changes read per call


@dataclass
class Absorbed:
    """What the job took in: the highest ``seq`` read, how many changes and items, the first
    PUT of each item new to the catalog file, and what the user should know."""

    through: int = 0
    changes: int = 0
    items: int = 0
    first_put: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_manifest(self) -> dict:
        return {"through": self.through, "changes": self.changes, "items": self.items}


def live_items_url(live_items: str | None, interactions: str | None) -> str | None:
    """The store to read item changes from: ``live_items`` as given (``none``: off), else the
    interactions' when they are an event store URL."""
    if live_items is None:
        return interactions if interactions is not None and is_store_url(interactions) else None
    if live_items.strip().lower() == "none":
        return None
    if not is_store_url(live_items):
        raise UserError(f"--live-items {live_items!r} is not an event store URL: give the store the service "
                        "writes to (sqlite:///path/events.db or redis://host:port/0), or none to leave them out")
    return live_items


def read_live_items(url: str, page: int = PAGE) -> tuple[dict[str, LiveItem], int, int]:
    """Every stored item change, folded: (id -> LiveItem, the highest seq read, how many)."""
    store = open_existing(url)
    state: dict[str, LiveItem] = {}
    through = count = 0
    try:
        while True:
            changes = store.item_changes(after=through, limit=page)
            if not changes:
                break
            fold(state, changes)
            through, count = changes[-1].seq, count + len(changes)
            if len(changes) < page:
                break
    finally:
        store.close()
    return state, through, count


def apply_live_items(items: pa.Table, state: dict[str, LiveItem], cfg, root) -> tuple[pa.Table, list[str]]:
    """``items`` (the loaded catalog, ``offline.catalog.load_catalog``) with the live items laid
    over it, in catalog order (new items last); ``cfg``: its CatalogConfig, ``root``: where
    relative image paths start. Also what the user should know (fields ignored, patches of
    items the catalog file lacks)."""
    id_col, notes = cfg.id_column, []
    row_of = {str(i): r for r, i in enumerate(items.column(id_col).to_pylist())}
    alive = [i for i in state.values() if not i.deleted]
    for c in CONTROL:  # carried only when some change set it
        if c not in items.column_names and any(c in i.fields for i in alive):
            items = items.append_column(c, pa.nulls(items.num_rows, CONTROL_TYPES[c]))
    allowed = set(catalog_columns(items.column_names, id_col)) | set(CONTROL)
    unknown: dict[str, int] = {}
    for i in alive:
        for name in set(i.fields) - allowed:
            unknown[name] = unknown.get(name, 0) + 1
    if unknown:
        named = ", ".join(f"{c!r} ({unknown[c]} item(s))" for c in sorted(unknown))
        notes.append(f"live items: column(s) {named} are not in catalog {cfg.path}: ignored; add them to the "
                     "catalog file to keep them")
    records, orphans = [], []
    bases = dict(zip([i.item_id for i in alive if i.item_id in row_of],
                     items.take(pa.array([row_of[i.item_id] for i in alive if i.item_id in row_of],
                                         pa.int64())).to_pylist()))
    for i in alive:
        base = bases.get(i.item_id)
        if base is None and not i.whole:
            orphans.append(i.item_id)
            continue
        rec = record(i, base, items.column_names, id_col, cfg.image_column)
        for c in cfg.text_columns:
            rec[c] = "" if rec.get(c) is None else str(rec[c])
        if cfg.image_column in rec:
            rec[IMAGE_URI] = resolve_image(rec[cfg.image_column], root)
        records.append(rec)
    if orphans:
        notes.append(f"live items: {len(orphans)} patched item(s) are neither in catalog {cfg.path} nor put live, "
                     f"e.g. {orphans[:5]}: left out; PUT them whole or add them to the catalog file")
    try:
        changed = pa.Table.from_pylist(records, schema=items.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        _refuse(records, items.schema, cfg)
    gone = {i.item_id for i in state.values() if i.deleted} | set(orphans)
    replaced = {rec[id_col]: items.num_rows + n for n, rec in enumerate(records)}
    order = [replaced.pop(iid, r) for r, iid in enumerate(items.column(id_col).to_pylist()) if iid not in gone]
    order += list(replaced.values())  # new items, in the order first changed
    return pa.concat_tables([items, changed]).take(pa.array(order, pa.int64())).combine_chunks(), notes


def _refuse(records: list[dict], schema: pa.Schema, cfg) -> None:
    """Name the first live item value that does not fit its catalog column's type."""
    for rec in records:
        for f in schema:
            try:
                pa.array([rec.get(f.name)], f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                raise UserError(f"live item {rec[cfg.id_column]!r}: {f.name}={rec.get(f.name)!r} does not fit catalog "
                                f"{cfg.path}'s {f.type} column: PATCH the item with a {f.type} value (or null), or "
                                "run with --live-items none") from None
    raise UserError(f"the live items do not fit catalog {cfg.path}'s columns: run with --live-items none")


def absorb(items: pa.Table, url: str | None, cfg, root) -> tuple[pa.Table, Absorbed | None]:
    """The catalog with the live items at ``url`` (None: as it is) and what was absorbed."""
    if url is None:
        return items, None
    state, through, count = read_live_items(url)
    known = set(items.column(cfg.id_column).to_pylist())
    items, notes = apply_live_items(items, state, cfg, root) if state else (items, [])
    first = {i.item_id: i.first_seen for i in state.values()
             if not i.deleted and i.first_seen is not None and i.item_id not in known}
    return items, Absorbed(through, count, len(state), first, notes)


def first_interactions(inter: Interactions | None, n: int) -> np.ndarray:
    """Each of ``n`` rows' first interaction time (seconds; NaN: none): one group-by."""
    out = np.full(n, np.nan)
    if inter is not None and len(inter.items):
        firsts = pa.table({"row": inter.items, "ts": inter.ts}).group_by("row").aggregate([("ts", "min")])
        out[firsts.column("row").to_numpy()] = firsts.column("ts_min").to_numpy().astype(np.float64)
    return out


def first_seen(ids: list[str], inter: Interactions | None, absorbed: Absorbed | None) -> pa.Array:
    """The ``first_seen`` column of items ``ids`` (``inter``: interactions on their rows): the
    first interaction, or for an item first PUT live that PUT when earlier or alone; null when
    neither."""
    when = first_interactions(inter, len(ids))
    for row, iid in enumerate(ids):
        put = absorbed.first_put.get(iid) if absorbed is not None else None
        if put is not None and not when[row] <= put:  # NaN (no interaction) compares false
            when[row] = put
    return pa.array(when, pa.float64(), mask=np.isnan(when))
