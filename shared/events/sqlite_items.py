"""The live catalog's change log (the items API's puts, patches, deletes) in the SQLite store:
a table of its own, ``item_changes``, whose ``seq`` is the AUTOINCREMENT rowid. SQLite has one
writer at a time, so ``seq`` increases in commit order, and AUTOINCREMENT never hands out a
pruned ``seq`` again. Writes go through the store's group commit (``synchronous=FULL``: durable
when ``add_item_changes`` returns); a read of what is new is a range on the rowid.

``item_vectors`` keeps the embeddings a server computed for live items (by version, item and
``seq``): a cache, so committed with ``synchronous=NORMAL``, pruned with the changes."""

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
CREATE TABLE IF NOT EXISTS item_vectors (
    version TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (version, item_id, seq)
) WITHOUT ROWID;
"""
INSERT_ITEM_CHANGE = "INSERT INTO item_changes (item_id, op, ts, body) VALUES (?, ?, ?, ?)"
# A cache (the embedding of an item's state in one version): committed without fsync, like impressions.
INSERT_ITEM_VECTOR = "INSERT OR REPLACE INTO item_vectors (version, item_id, seq, vector) VALUES (?, ?, ?, ?)"
IN_CHUNK = 500  # item ids per SELECT ... IN (...)


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
        return self._erase("DELETE FROM item_changes WHERE seq <= ?", (int(through),),
                           "DELETE FROM item_vectors WHERE seq <= ?")

    def add_item_vectors(self, version: str, vectors: Sequence[tuple[str, int, bytes]]) -> int:
        return self._write(INSERT_ITEM_VECTOR, [(version, item_id, int(seq), blob) for item_id, seq, blob in vectors])

    def item_vectors(self, version: str, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        wanted, out = set(keys), {}
        ids = sorted({item_id for item_id, _ in wanted})
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start:start + IN_CHUNK]
            rows = self._query(f"SELECT item_id, seq, vector FROM item_vectors WHERE version = ? AND item_id IN "
                               f"({','.join('?' * len(chunk))})", (version, *chunk))
            out.update({(i, q): v for i, q, v in rows if (i, q) in wanted})
        return out
