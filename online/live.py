"""Live items in a served version: the items API's changes applied to a ``Retriever`` in the
process that scores (the compute process and its standby alike), between batches.

A change whose embedded text is the item's current one (a price, a stock) is written over its
row in place. Any other appends a row: the item's new catalog row (``shared.live_items.record``),
its vector (embedded with the version's template and ONNX encoder) and, in a hybrid, its
collaborative vectors (the old row's, or mapped from its content: a new item counts as new). The row
it replaces, and any item hidden, expired or deleted, joins ``removed``: the rows the retriever
excludes with the seen items (``Retriever._excluded``). Arrays grow with spare room; FAISS adds
the rows (flat, HNSW, IVF), the learned profile encoder their input rows (``add_items``).

A change the version absorbed already (its manifest's ``live_items.through``) is skipped, as is
one applied before (by ``seq``): applying is idempotent (a restart or hot swap applies them all)."""

from __future__ import annotations

import heapq
import time

import numpy as np
import pyarrow as pa

from groundrec.online.flat_scores import grown
from groundrec.shared.artifact import RECENT_INTERACTIONS, WINDOW_INTERACTIONS
from groundrec.online.errors import Unprocessable
from groundrec.shared.live_items import CONTROL, LiveItem, patched, record, shown
from groundrec.shared.scoring.collab import index_rows
from groundrec.shared.scoring.searcher import Popularity
from groundrec.shared.sequence_encoder import item_inputs
from groundrec.shared.text import item_text

COMBINE_CHUNKS = 32  # the item table's chunks are merged beyond this many (one per apply)


class LiveOverlay:
    """The live items of one ``Retriever`` (``retriever.live``)."""

    def __init__(self, retriever):
        self.r = retriever
        v = retriever.v
        self.n_version = v.index.ntotal  # rows the published version holds
        self.through = int(((v.manifest.model_extra or {}).get("live_items") or {}).get("through") or 0)
        self.applied: dict[str, int] = {}  # item id -> seq of the change applied last
        self.deleted: set[str] = set()
        self.first_seen: dict[str, float] = {}  # live items' first PUT (changed first_seen_changes times)
        self.first_seen_changes = 0
        self.removed: set[int] = set()
        self.textless: set[int] = set()  # rows with no text to embed (an image alone, not grounded yet): never shown
        self._expiring: list[tuple[float, int]] = []  # (available_until, row): a heap
        self._until: dict[int, float] = {}  # a row's available_until now (older heap entries are stale)
        self.states: dict[str, LiveItem] = {}  # the state applied last per item
        self._published_rules: dict[int, dict] = {}  # the version's own hidden/available_until per row
        self._bufs: dict[str, np.ndarray] = {}  # arrays with spare room; the version holds views of them
        self._published: dict[str, int] = {}  # an item's published row, once a live row replaced it
        columns = v.items.column_names
        if "hidden" in columns or "available_until" in columns:  # absorbed by a job: rules kept as columns
            rows = v.items.select([c for c in ("hidden", "available_until") if c in columns]).to_pylist()
            for row, fields in enumerate(rows):
                self._rule(row, fields, time.time())
            self._published_rules = {row: f for row, f in enumerate(rows)  # only the rows with a rule
                                     if f.get("hidden") or f.get("available_until") is not None}
        self.frozen = frozenset(self.removed)

    # --- what requests read ---------------------------------------------------------
    def excluded(self) -> frozenset[int]:
        """The rows no answer may hold now (replaced, hidden, deleted or expired)."""
        if self._expiring and self._expiring[0][0] <= time.time():
            while self._expiring and self._expiring[0][0] <= time.time():
                until, row = heapq.heappop(self._expiring)
                if self._until.get(row) == until:
                    self.removed.add(row)
            self.frozen = frozenset(self.removed)
        return self.frozen

    def _rule(self, row: int, fields, now: float) -> None:
        """Whether ``row`` may be shown (``hidden``, ``available_until``; an end in the heap is not pushed again)."""
        self.removed.discard(row)
        before = self._until.pop(row, None)
        if not shown(fields, now) or row in self.textless:
            self.removed.add(row)
        elif fields.get("available_until") is not None:
            self._until[row] = float(fields["available_until"])
            if self._until[row] != before:
                heapq.heappush(self._expiring, (self._until[row], row))

    def _rules_only(self, item: LiveItem, old: int | None) -> bool:
        """Whether ``item`` differs from what its current row holds only in ``hidden`` or
        ``available_until`` (then no row is added: its rules change, in place)."""
        if old is None or item.deleted or item.item_id in self.deleted:
            return False
        prev = self.states.get(item.item_id)
        core = lambda fields: {k: v for k, v in fields.items() if k not in CONTROL}  # noqa: E731
        return core(item.fields) == (core(prev.fields) if prev else {}) and item.whole == (prev.whole if prev else False)

    def _orphan(self, item: LiveItem) -> bool:
        """A patch of an item this version never held (e.g. put into a later version, then
        the current version rolled back): nothing to patch here, so it is left out, as the next
        job leaves it out (``offline/live_items``), never turned into an item with empty columns."""
        return not (item.whole or item.deleted) and item.item_id not in self.r.v.row_of

    def state(self, item_id: str, row: int) -> dict:
        """What ``GET /items/{id}`` adds for an item: whether answers may show it, and for a
        live one when it was changed and first put."""
        out: dict = {"shown": row not in self.excluded()}
        if item_id in self.applied:
            out["live"] = {"seq": self.applied[item_id], "first_seen": self.first_seen.get(item_id)}
        return out

    # --- applying changes -----------------------------------------------------------
    def _plan(self, items: list[LiveItem]):
        """What applying ``items`` means: the changes still to apply, the rows to append with
        their embedded texts and the rows they replace, the rule-only changes and the in-place
        ones. Reads the version, changes nothing."""
        v = self.r.v
        todo = list({i.item_id: i for i in items if i.seq > self.through
                     and i.seq > self.applied.get(i.item_id, 0) and not self._orphan(i)}.values())
        rows, texts, olds, quick, in_place = [], [], [], [], []
        for item in todo:
            old = v.row_of.get(item.item_id)
            if self._rules_only(item, old) or item.deleted:
                quick.append((item, old))
                continue
            origin = self._published.get(item.item_id, old if old is not None and old < self.n_version else None)
            base = v.items.slice(origin, 1).to_pylist()[0] if origin is not None else None
            row = record(item, base, v.items.column_names, v.manifest.id_column, v.manifest.catalog_image_column,
                         v.items.schema)
            text = item_text(v.manifest.text_template, row, v.manifest.catalog_text_columns)
            if "text" in row:  # the embedded text, as the job writes it
                row["text"] = text
            for counted in (WINDOW_INTERACTIONS, RECENT_INTERACTIONS):  # the job's counts: its own, or none
                if counted in row:
                    row[counted] = v.items.column(counted)[old].as_py() if old is not None else 0
            current = base if origin == old else v.items.slice(old, 1).to_pylist()[0] if old is not None else None
            if current is not None and item_text(v.manifest.text_template, current, v.manifest.catalog_text_columns) == text:
                # the same text, the same vectors (a price or a stock): its row changes in place
                in_place.append((item, old, row, {c: x for c, x in row.items() if current.get(c) != x}))
                continue
            rows.append((item, row))
            texts.append(text)
            olds.append(old)
        return todo, rows, texts, olds, quick, in_place

    def texts(self, items: list[LiveItem], vectors: dict[str, np.ndarray] | None = None) -> dict[str, str]:
        """The texts applying ``items`` would embed (item id -> text; those not in ``vectors``),
        without applying them: another process may encode them (``compute.RemoteServing``)."""
        _, rows, texts, _, _, _ = self._plan(items)
        return {item.item_id: text for (item, _), text in zip(rows, texts) if item.item_id not in (vectors or {})}

    def apply(self, items: list[LiveItem], vectors: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Apply live items' states (``vectors``: their embeddings, computed by another process
        holding the same version, e.g. the primary for its standby); the embeddings it computed.
        Everything that can fail (encoding, the table's types) is done before anything changes:
        a failed apply leaves the version as it was and its items not applied."""
        v, now = self.r.v, time.time()
        todo, rows, texts, olds, quick, in_place = self._plan(items)
        computed: dict[str, np.ndarray] = {}
        ruled = [(old, *self._ruled(item, old)) for item, old in quick if not item.deleted]  # (row, rules, columns)
        written = [(old, values) for _, old, _, values in in_place if values] + [(old, c) for old, _, c in ruled if c]
        items_now = patched(v.items, written, COMBINE_CHUNKS)
        if rows:
            content = self._vectors(rows, texts, vectors or {}, computed)
            table = pa.Table.from_pylist([row for _, row in rows], schema=v.items.schema)
        if in_place or written:
            v.items = items_now
            self.r._groups.clear()  # max_per's groups read the columns
            for item, old, row, _ in in_place:
                self._rule(old, {c: item.fields.get(c, row.get(c)) for c in CONTROL}, now)
        if rows:
            self._append(rows, olds, content, table, now, texts)
        for item, old in quick:
            if item.deleted:
                self.deleted.add(item.item_id)
                if old is not None:
                    self.removed.add(old)
        for old, rules, _ in ruled:  # hidden, shown again, a new end of sale: the row's rules change, no new row
            self._rule(old, rules, now)
        for item in todo:
            self.applied[item.item_id] = item.seq
            self.states[item.item_id] = item
            if not item.deleted:
                self.deleted.discard(item.item_id)
            row = v.row_of.get(item.item_id)  # None: deleted before this version ever held it
            published = item.item_id in self._published or (row is not None and row < self.n_version)
            if item.first_seen is not None and row is not None and not published:  # new to the catalog: /latest shows it
                if self.first_seen.get(item.item_id) != item.first_seen:  # /latest's order made again
                    self.first_seen[item.item_id], self.first_seen_changes = item.first_seen, self.first_seen_changes + 1
        self.frozen = frozenset(self.removed)
        return computed

    def _ruled(self, item: LiveItem, old: int) -> tuple[dict, dict]:
        """A rules-only change's rules (a patch's over its published row's) and the item table's
        columns of them to write over its row (a version whose job took them in as columns)."""
        kept = {} if item.whole else self._published_rules.get(self._published.get(item.item_id, old), {})
        rules = {**kept, **item.fields}  # the version's rules: its published row's
        names = self.r.v.items.column_names
        return rules, {c: rules.get(c) for c in CONTROL if c in names and (item.whole or c in rules)}

    def _vectors(self, rows, texts, given, computed) -> np.ndarray:
        """The rows' vectors: ``given`` (by the primary) or encoded here (kept in ``computed``)."""
        out = np.empty((len(rows), self.r.v.vectors.shape[1]), np.float32)
        todo = [n for n, (item, _) in enumerate(rows) if item.item_id not in given]
        for n, (item, _) in enumerate(rows):
            if item.item_id in given:
                out[n] = given[item.item_id]
        if todo:
            if self.r.encoder is None:  # the item's fault here (a pinned arm skips it, deletes still apply)
                raise Unprocessable(f"version {self.r.v.path.name} has no ONNX text encoder to embed live item(s) "
                                    f"{[rows[n][0].item_id for n in todo][:5]}")
            out[todo] = self.r.encoder.encode([texts[n] for n in todo])
            for n in todo:
                computed[rows[n][0].item_id] = out[n]
        return out

    def _append(self, rows, olds, content: np.ndarray, table: pa.Table, now: float, texts: list[str]) -> None:
        r, v = self.r, self.r.v
        n, k = v.index.ntotal, len(rows)
        new = np.arange(n, n + k)
        old = np.array([o if o is not None else -1 for o in olds])
        known = old >= 0
        # content vectors
        buf = grown(self._bufs.get("vectors", v.vectors), n, k)
        buf[n:n + k] = content
        self._bufs["vectors"], v.vectors = buf, buf[:n + k]
        weighted = None
        if r.hybrid:
            cmap = v.collab_content_map  # a new item's vectors as a cold catalog item's were made (zeros without)
            mapped = content @ cmap if cmap is not None else np.zeros((k, 2 * v.collab_query.shape[1]), np.float32)
            kept = known & ~self._content_made(old, cmap)  # a changed item keeps its vectors unless they were its content's
            for part, name in enumerate(("collab_query", "collab_item")):
                cur = getattr(v, name)
                rank = cur.shape[1]
                buf = grown(self._bufs.get(name, cur), n, k)
                buf[n:n + k] = mapped[:, part * rank:(part + 1) * rank]
                buf[n:n + k][kept] = cur[old[kept]]
                self._bufs[name] = buf
                setattr(v, name, buf[:n + k])
            weighted = v.collab_weight * v.collab_item[n:n + k]
        indexed = np.ascontiguousarray(index_rows(content, weighted, v.project_item), dtype=np.float32)
        v.index.add(indexed)
        if r.flat is not None:
            r.flat.append(indexed, content, v.collab_item[n:n + k] if r.hybrid else None)
        # the item table, ids and rows
        table = pa.concat_tables([v.items, table])
        v.items = table.combine_chunks() if table.column(0).num_chunks > COMBINE_CHUNKS else table
        for (item, rec), row, o, text in zip(rows, new, olds, texts):
            if not text:  # its vector would be the empty text's, shared by every such item: in no answer until the job
                self.textless.add(int(row))
            if o is not None and o < self.n_version:
                self._published[item.item_id] = o  # a patch is over the published row
            v.item_ids.append(item.item_id)
            v.row_of[item.item_id] = int(row)
            if o is not None:
                self.removed.add(o)
            self._rule(int(row), {c: item.fields.get(c, rec.get(c)) for c in CONTROL}, now)
        self._grow_ranking(new, old, rows)
        if r.sequence is not None:  # the learned profile encoder reads the new rows too (an item's new vectors)
            inputs = lambda rows: item_inputs(v.vectors[rows], *((v.collab_query[rows], v.collab_item[rows])  # noqa: E731
                                                                  if r.hybrid else ()))
            r.sequence.add_items(inputs(new), old, inputs(old[known]))  # a changed item keeps its id part

    def _content_made(self, old: np.ndarray, cmap: np.ndarray | None) -> np.ndarray:
        """Per new row, whether it replaces a row whose collaborative vectors its old content
        made (nobody bought it: the content map's, the job's rule): those are made again from
        the new text, as the next job would; bought items keep what their buyers taught."""
        made = np.zeros(len(old), bool)
        at = np.flatnonzero(old >= 0)
        if cmap is None or not len(at):
            return made
        v = self.r.v
        want = np.asarray(v.vectors[old[at]], np.float32) @ cmap
        have = np.hstack([v.collab_query[old[at]], v.collab_item[old[at]]])
        made[at] = np.all(np.isclose(have, want, rtol=1e-3, atol=1e-5), axis=1)
        return made

    def _grow_ranking(self, new: np.ndarray, old: np.ndarray, rows) -> None:
        """The searcher's view of the catalog: its size, the new items it keeps places for (a
        live item nobody interacted with, or one that replaces such an item's row), popularity
        laid on the new rows."""
        r = self.r
        ranker, total = r.ranker, r.v.index.ntotal
        ranker.n_items = total
        if r.new_rows is not None:
            was_new = np.array([o < 0 or int(o) in ranker.is_new for o in old], bool)
            fresh = new[was_new] if WINDOW_INTERACTIONS in r.v.items.column_names else new[:0]
            r.new_rows = np.concatenate([r.new_rows, fresh])
            ranker.new_rows = r.searcher.new_rows = r.new_rows
            ranker.is_new = frozenset(r.new_rows.tolist())
            if r.searcher.new_vectors is not None or (len(r.new_rows) and r.flat is None):
                r.searcher.new_vectors = r.searcher.indexed(r.new_rows)
        if ranker.recent_prior is not None:  # the version's recent prior: a changed item keeps its own, a new one none
            carried = np.where(old >= 0, ranker.recent_prior[np.maximum(old, 0)], 0.0).astype(np.float32)
            ranker.recent_prior = np.concatenate([ranker.recent_prior, carried])
        counts = np.concatenate([r.counts, [float((r.popularity_map or {}).get(item.item_id, 0.0))
                                            for item, _ in rows]])
        r.counts = counts
        ranker.popularity = Popularity.of(counts)
        r._groups.clear()
