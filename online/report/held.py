"""The columns the attribution works on: the lists shown that are still held (``Held``:
impressions an event may yet be credited to, with the credits they earned so far) and, for one
chunk of events, the few of them it can reach with their users and items coded among themselves
(``Reach``). No object per row and no code table that grows with the log: a batch of
impressions comes in as a pyarrow table (``IMPRESSION_COLUMNS``) and leaves as a slice of one;
strings are hashed only among the lists a chunk can reach (``dictionary_encode``), and the
chunk's own strings are looked up in those (``index_in``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from groundrec.shared.events.store import IMPRESSION_COLUMNS

NULL, UNKNOWN = -1, -2  # the code of a null string; of a string none of the lists reached holds


class Vocab:
    """Strings to dense codes (0, 1, ... in order of first sight), the same code for the same
    string in every batch; a null is -1. For small sets (the event types)."""

    def __init__(self) -> None:
        self.values = pa.array([], pa.string())

    def encode(self, strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks()
        if strings.type != pa.string():
            strings = strings.cast(pa.string())
        codes = pc.index_in(strings, value_set=self.values)
        new = strings.filter(pc.and_(codes.is_null(), strings.is_valid()))
        if len(new):
            self.values = pa.concat_arrays([self.values, pc.unique(new)])
            codes = pc.index_in(strings, value_set=self.values)
        return codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def flat_lists(lists: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A list column's values, the row each came from and each row's start among them (a
    null list: no values)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    return pc.list_flatten(lists), np.repeat(np.arange(len(lengths)), lengths), starts


def _coded(strings: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Codes among themselves (a null: NULL) and the distinct strings they index."""
    encoded = (strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings).dictionary_encode()
    return encoded.indices.fill_null(NULL).to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _lookup(strings: pa.Array, known: pa.Array) -> np.ndarray:
    """Codes of ``strings`` among ``known`` (NULL for a null, UNKNOWN for one not there)."""
    if strings.type != known.type:
        strings = strings.cast(known.type)
    codes = pc.index_in(strings, value_set=known).fill_null(UNKNOWN).to_numpy(zero_copy_only=False).astype(np.int64)
    if strings.null_count:
        codes[~strings.is_valid().to_numpy(zero_copy_only=False)] = NULL
    return codes


class Reach:
    """Held lists ``k`` (indices from ``base``, sorted, distinct) with their users and items
    coded among themselves: list j of them holds slots ``starts[j]:starts[j + 1]``, shown to
    ``user[j]`` (NULL: to no user id), items ``slot_item``."""

    def __init__(self, held: Held, k: np.ndarray):
        self.k = k
        rows = held.rows(k, ["user_id", "items"])
        self.user, self.users = _coded(rows.column("user_id"))
        flat, _, self.starts = flat_lists(rows.column("items"))
        self.slot_item, self.items = _coded(flat)

    def user_codes(self, names: pa.Array) -> np.ndarray:
        return _lookup(names, self.users)

    def item_codes(self, names: pa.Array) -> np.ndarray:
        return _lookup(names, self.items)

    def slots(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For lists ``j`` (indices into ``k``): the index into ``j`` and the position of each
        of their slots."""
        lengths = self.starts[j + 1] - self.starts[j]
        which = np.repeat(np.arange(len(j)), lengths)
        first = np.zeros(len(j) + 1, np.int64)
        np.cumsum(lengths, out=first[1:])
        return which, np.arange(len(which)) - first[which]

    def position(self, j: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The first 0-based position of ``item[i]`` in list ``j[i]``; -1 if it did not show it."""
        which, pos = self.slots(j)
        hit = self.slot_item[self.starts[j][which] + pos] == item[which]
        out = np.full(len(j), -1, np.int64)
        found, first = np.unique(which[hit], return_index=True)
        out[found] = pos[hit][first]
        return out


class Held:
    """Impressions in stream order, numbered from 0 (``g``) as they arrive, of which those from
    ``base`` on are held: time, whether shown to a user id, the id's index, the table rows
    (for handing on and for ``Reach``) and the credits earned: (g, position, event type code,
    event number)."""

    def __init__(self) -> None:
        self.base = 0
        self.ts = np.empty(0)
        self.known = np.empty(0, bool)  # shown to a user id
        self.by_id: dict[str, int] = {}
        self.tables: list[pa.Table] = []
        self.firsts = np.zeros(1, np.int64)  # held index of each table's first row; then the count
        self.credits: list[np.ndarray] = []  # (4, n) int64 blocks

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, table: pa.Table) -> None:
        n = table.num_rows
        if not n:
            return
        g0 = self.base + len(self)
        self.ts = np.concatenate([self.ts, table["timestamp"].to_numpy()])
        self.known = np.concatenate([self.known, table["user_id"].is_valid().to_numpy(zero_copy_only=False)])
        self.by_id.update(zip(table["recommendation_id"].to_pylist(), range(g0, g0 + n)))
        self.tables.append(table)
        self.firsts = np.append(self.firsts, self.firsts[-1] + n)

    def rows(self, k: np.ndarray, columns: list[str]) -> pa.Table:
        """``columns`` of held impressions ``k`` (sorted), in that order."""
        block = np.searchsorted(self.firsts, k, side="right") - 1
        parts = [self.tables[b].select(columns).take(pa.array(k[block == b] - self.firsts[b]))
                 for b in np.unique(block)]
        return pa.concat_tables(parts) if parts else IMPRESSION_COLUMNS.empty_table().select(columns)

    def credit(self, g: np.ndarray, pos: np.ndarray, kind: np.ndarray, seq: np.ndarray) -> None:
        if len(g):
            self.credits.append(np.stack([g, pos, kind, seq]))

    def release(self, k: int) -> tuple[pa.Table, np.ndarray]:
        """Stop holding the first ``k`` held impressions: their rows and their credits (rows
        of (row in the table, position, event type code), in the events' order)."""
        g_end = self.base + k
        rows = _take_rows(self.tables, k)
        for rid, g in zip(rows["recommendation_id"].to_pylist(), range(self.base, g_end)):
            if self.by_id.get(rid) == g:
                del self.by_id[rid]
        self.tables = _drop_rows(self.tables, k)
        self.firsts = np.concatenate([[0], np.cumsum([t.num_rows for t in self.tables], dtype=np.int64)])
        earned = np.concatenate(self.credits, axis=1) if self.credits else np.empty((4, 0), np.int64)
        mine = earned[0] < g_end
        out, rest = earned[:, mine], earned[:, ~mine]
        self.credits = [rest] if rest.shape[1] else []
        out = out[:, np.lexsort((out[3], out[0]))]
        out[0] -= self.base
        self.ts, self.known = self.ts[k:], self.known[k:]
        self.base = g_end
        return rows, out[:3]


def _take_rows(tables: list[pa.Table], k: int) -> pa.Table:
    out, left = [], k
    for t in tables:
        if left <= 0:
            break
        out.append(t.slice(0, min(left, t.num_rows)))
        left -= t.num_rows
    return pa.concat_tables(out) if out else tables[0].slice(0, 0)


def _drop_rows(tables: list[pa.Table], k: int) -> list[pa.Table]:
    out = []
    for t in tables:
        if k >= t.num_rows:
            k -= t.num_rows
            continue
        out.append(t.slice(k) if k else t)
        k = 0
    return out
