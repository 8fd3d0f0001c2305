"""Torch-free runner of the learned profile encoder (``groundrec.offline.sequence``): numpy +
onnxruntime over an exported directory.

The directory (written by ``groundrec.offline.sequence.export``) holds ``sequence.json``
(the metadata), ``sequence.onnx`` (the transformer: embedded histories -> queries) and
``sequence_items.npy`` (each item's input row, items + 1 rows, the last a zero pad). A
history is a list of item rows of the version's item table, oldest first:

- rows outside ``[0, n_items)`` (-1, or an item the encoder was not exported with) are
  dropped first, then the latest ``max_len`` rows are kept (an over-long history is cut);
- an empty history (or one with no known item) gives a **zero row** (every item then scores
  0: the caller falls back, e.g. to the popular items, as for any unusable history).

``encode`` returns float32 queries ``[n, out_dim]`` for the index's inner-product search.

Items added after the export (the live catalog's new rows, issue 33) get an input row as a
new item had one in training: the exported projection (``sequence_project.npz``) of what the
encoder reads of an item (``item_inputs``: its content vector, and for a hybrid its
collaborative vectors at unit length, zeros while nobody interacted with it), no id part
(``add_items``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from groundrec.shared.errors import UserError
from groundrec.shared.scoring.profiles import unit

SEQUENCE_CONFIG = "sequence.json"
SEQUENCE_ONNX = "sequence.onnx"
SEQUENCE_ITEMS = "sequence_items.npy"
SEQUENCE_PROJECT = "sequence_project.npz"  # W, b: a new item's input row is W @ its vectors + b
PAD = -1


def item_inputs(content: np.ndarray, query: np.ndarray | None = None, item: np.ndarray | None = None) -> np.ndarray:
    """What the encoder reads of each item (one rule for training and serving): its content
    vector and, for a hybrid, its collaborative query- and item-side vectors at unit length."""
    if query is None:
        return np.ascontiguousarray(content, np.float32)
    return np.ascontiguousarray(np.hstack([content, unit(query), unit(item)]), np.float32)


def pad_histories(histories: list, max_len: int, n_items: int) -> np.ndarray:
    """``[n, max_len]`` int64: each history's known item rows (in ``[0, n_items)``), the latest
    ``max_len`` of them, right-aligned, ``PAD`` before them. The one rule of the runner and of
    the PyTorch model it is checked against."""
    out = np.full((len(histories), max_len), PAD, np.int64)
    for i, h in enumerate(histories):
        h = np.asarray(h, np.int64).reshape(-1)
        h = h[(h >= 0) & (h < n_items)][-max_len:] if max_len else h[:0]
        if len(h):
            out[i, max_len - len(h):] = h
    return out


def slot_groups(lengths: np.ndarray, max_len: int) -> list[tuple[np.ndarray, int]]:
    """(positions, slots) groups of histories by their filled slots (``lengths``, 1 to
    ``max_len``): each group's histories fill at most ``slots``, a power of two or
    ``max_len``, so a group's padding is under half of it and a batch takes a few calls."""
    bounds = sorted({min(1 << max(int(n) - 1, 0).bit_length(), max_len) for n in lengths})
    of = np.searchsorted(np.asarray(bounds), lengths)
    return [(np.flatnonzero(of == g), b) for g, b in enumerate(bounds)]


class SequenceEncoder:
    """``SequenceEncoder(directory, threads=1).encode(histories) -> np.ndarray``."""

    def __init__(self, directory: str | Path, threads: int | None = 1):
        import onnxruntime as ort

        self.directory = Path(directory)
        try:
            self.meta = json.loads((self.directory / SEQUENCE_CONFIG).read_text())
            table = np.load(self.directory / self.meta["items"])
            # W, b of live items' rows, read now like every array of a version (a file read at the
            # first PUT could be gone by then: a cached remote version evicted while it serves);
            # None: exported before live items had rows (they stay out of its histories)
            project = self.directory / self.meta.get("project", SEQUENCE_PROJECT)
            self._project = None
            if project.is_file():
                with np.load(project) as f:
                    self._project = (f["W"].astype(np.float32), f["b"].astype(np.float32))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"sequence encoder at {self.directory}: cannot read it ({e})") from None
        self.max_len, n_items = int(self.meta["max_len"]), int(self.meta["n_items"])
        self.out_dim = int(self.meta["out_dim"])
        if table.shape != (n_items + 1, int(self.meta["dim"])):
            raise UserError(f"sequence encoder at {self.directory}: item table {table.shape}, expected "
                            f"({n_items + 1}, {self.meta['dim']})")
        # (buffer, items): the buffer's rows past the items are zeros, the first of them the pad.
        # Added items fill its spare rows (grown twice as big when full), so an add copies nothing.
        self._rows = (table, n_items)
        opts = ort.SessionOptions()
        if threads:  # set on purpose: onnxruntime would otherwise take every core
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.directory / self.meta["files"]["fp32"]), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own errors (a graph of a newer opset, a damaged file)
            raise UserError(f"sequence encoder at {self.directory}: onnxruntime {ort.__version__} cannot load it "
                            f"({type(e).__name__}: {e})") from None

    @property
    def n_items(self) -> int:
        return self._rows[1]

    @property
    def table(self) -> np.ndarray:
        """Each item's input row, then the pad (zeros)."""
        buf, n = self._rows
        return buf[:n + 1]

    def encode(self, histories: list, batch_size: int = 256) -> np.ndarray:
        """Queries ``[len(histories), out_dim]`` float32; zero rows for empty histories. On a
        graph whose slots axis is dynamic (``meta["slots"]``; exports before it have
        ``max_len`` slots fixed) the histories go in groups by length (``slot_groups``), each
        fed only the last slots its longest history fills: the same queries for less work."""
        out = np.zeros((len(histories), self.out_dim), np.float32)
        table, n_items = self._rows
        items = pad_histories(histories, self.max_len, n_items)
        filled = (items >= 0).sum(axis=1)
        used = np.flatnonzero(filled)
        groups = slot_groups(filled[used], self.max_len) if self.meta.get("slots") == "dynamic" else [
            (np.arange(len(used)), self.max_len)]
        for members, slots in groups:
            for start in range(0, len(members), batch_size):
                rows = used[members[start:start + batch_size]]
                idx = items[rows, self.max_len - slots:]
                valid = idx >= 0
                feed = {"embedded": table[np.where(valid, idx, n_items)], "valid": valid.astype(np.float32)}
                out[rows] = self.session.run(None, feed)[0]
        return out

    def add_items(self, inputs: np.ndarray, replaces: np.ndarray | None = None,
                  replaced_inputs: np.ndarray | None = None) -> None:
        """Rows for items appended to the version after the export (``inputs``: their
        ``item_inputs``), numbered on from ``n_items`` as the version numbers them: the
        projection of their inputs. ``replaces``: per new row, the row of the item it is a new
        row of (a changed item re-embedded: -1 for a new item), whose learned id part (its row
        less the projection of its inputs, ``replaced_inputs``, one per such row) it keeps, so
        that a changed text does not make the encoder forget what it learned of the item."""
        if self._project is None:  # rows past n_items are left out of histories, as before any was added
            return
        w, b = self._project
        if inputs.shape[1] != w.shape[1]:
            raise UserError(f"sequence encoder at {self.directory}: new items' inputs have {inputs.shape[1]} "
                            f"columns, the encoder reads {w.shape[1]}")
        buf, n = self._rows
        k = len(inputs)
        if len(buf) < n + k + 1:  # room for the rows and the pad after them
            grown = np.zeros((2 * (n + k) + 1, buf.shape[1]), np.float32)
            grown[:n] = buf[:n]
            buf = grown
        rows = inputs.astype(np.float32) @ w.T + b
        if replaces is not None and (replaces >= 0).any():
            at = np.asarray(replaces) >= 0
            rows[at] += buf[np.asarray(replaces)[at]] - (np.asarray(replaced_inputs, np.float32) @ w.T + b)
        buf[n:n + k] = rows
        self._rows = (buf, n + k)
