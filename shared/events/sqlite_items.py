"""The live catalog's change log (the items API's puts, patches, deletes) in the SQLite store:
a table of its own, ``item_changes``, whose ``seq`` is the AUTOINCREMENT rowid. SQLite has one
writer at a time, so ``seq`` increases in commit order, and AUTOINCREMENT never hands out a
pruned ``seq`` again. Writes go through the store's group commit (``synchronous=FULL``: durable
when ``add_item_changes`` returns); a read of what is new is a range on the rowid."""

from __future__ import annotations

from collections.abc import Sequence

from groundrec.shared.events.store import ItemChange

# Created on open (``CREATE ... IF NOT EXISTS``): a store written before this table opens with it.
ITEMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS item_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    op TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL
);
"""
INSERT_ITEM_CHANGE = "INSERT INTO item_changes (item_id, op, ts, body) VALUES (?, ?, ?, ?)"


class SQLiteItems:
    """The item-change half of ``SQLiteStore`` (which provides ``_write``, ``_query``, ``_erase``)."""

    def add_item_changes(self, changes: Sequence[ItemChange]) -> int:
        # One ticket: its rows are inserted in order, in one transaction with whatever else
        # the group commit carries.
        return self._write(INSERT_ITEM_CHANGE, [(c.item_id, c.op, float(c.timestamp), c.fields) for c in changes])

    def item_changes(self, after: int = 0, limit: int = 10_000) -> list[ItemChange]:
        rows = self._query("SELECT item_id, op, body, ts, seq FROM item_changes WHERE seq > ? ORDER BY seq LIMIT ?",
                           (int(after), int(limit)))
        return [ItemChange(*r) for r in rows]

    def prune_item_changes(self, through: int) -> int:
        return self._erase("DELETE FROM item_changes WHERE seq <= ?", (int(through),))
