"""The columns the attribution works on: string codes (``Vocab``) and the lists shown that are
still held (``Held``: impressions an event may yet be credited to, as numpy columns, with the
credits they earned so far). No object per row: a batch of impressions comes in as a pyarrow
table (``IMPRESSION_COLUMNS``) and leaves as a slice of one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Vocab:
    """Strings to dense codes (0, 1, ... in order of first sight), the same code for the same
    string in every batch; a null is -1."""

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

    def code(self, value: str) -> int:
        found = pc.index_in(pa.array([value], pa.string()), value_set=self.values)[0].as_py()
        return -1 if found is None else found


def flat_lists(lists: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A list column's values, the row each came from and each row's start among them (a
    null list: no values)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    return pc.list_flatten(lists), np.repeat(np.arange(len(lengths)), lengths), starts


class Held:
    """Impressions in stream order, numbered from 0 (``g``) as they arrive, of which those from
    ``base`` on are held: time, user code, items (codes, in order), the id's index, the table
    rows (for handing on) and the credits earned: (g, position, event type code, event number)."""

    def __init__(self, users: Vocab, items: Vocab):
        self.users, self.items = users, items
        self.base = 0
        self.ts = np.empty(0)
        self.user = np.empty(0, np.int64)
        self.starts = np.zeros(1, np.int64)  # slot range of held impression k: starts[k]:starts[k + 1]
        self.slot_item = np.empty(0, np.int64)
        self.by_id: dict[str, int] = {}
        self.tables: list[pa.Table] = []
        self.credits: list[np.ndarray] = []  # (4, n) int64 blocks

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, table: pa.Table) -> None:
        n = table.num_rows
        if not n:
            return
        g0 = self.base + len(self)
        flat, _, starts = flat_lists(table["items"])
        self.ts = np.concatenate([self.ts, table["timestamp"].to_numpy()])
        self.user = np.concatenate([self.user, self.users.encode(table["user_id"])])
        self.starts = np.concatenate([self.starts, starts[1:] + self.starts[-1]])
        self.slot_item = np.concatenate([self.slot_item, self.items.encode(flat)])
        self.by_id.update(zip(table["recommendation_id"].to_pylist(), range(g0, g0 + n)))
        self.tables.append(table)

    def slots(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For held impressions ``k`` (indices from ``base``): the index into ``k`` and the
        position of each of their slots."""
        lengths = self.starts[k + 1] - self.starts[k]
        which = np.repeat(np.arange(len(k)), lengths)
        first = np.zeros(len(k) + 1, np.int64)
        np.cumsum(lengths, out=first[1:])
        return which, np.arange(len(which)) - first[which]

    def position(self, k: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The first 0-based position of ``item[j]`` in held impression ``k[j]``'s list; -1 if
        the list did not show it."""
        which, pos = self.slots(k)
        hit = self.slot_item[self.starts[k][which] + pos] == item[which]
        out = np.full(len(k), -1, np.int64)
        found, first = np.unique(which[hit], return_index=True)
        out[found] = pos[hit][first]
        return out

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
        earned = np.concatenate(self.credits, axis=1) if self.credits else np.empty((4, 0), np.int64)
        mine = earned[0] < g_end
        out, rest = earned[:, mine], earned[:, ~mine]
        self.credits = [rest] if rest.shape[1] else []
        out = out[:, np.lexsort((out[3], out[0]))]
        out[0] -= self.base
        s = self.starts[k]
        self.ts, self.user, self.slot_item = self.ts[k:], self.user[k:], self.slot_item[s:]
        self.starts = self.starts[k:] - s
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
