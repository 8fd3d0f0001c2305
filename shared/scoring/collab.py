"""The collaborative and hybrid rules: a history's collaborative query, the hybrid query the
index is searched with, and what the index holds for an item.

A hybrid scores an item as ``content cosine + weight x collaborative score``: the index holds
``[content, weight x item-side]`` and a profile is searched as ``[content profile,
collaborative query]``, both through the version's projection when it has one (then both
are as wide as the content embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundrec.shared.scoring.profiles import unit

CHUNK = 65_536  # index rows projected at a time: bounded memory at 1M items
GATHER_BYTES = 1 << 20  # a batch's history rows summed a group of users at a time, about this much each


def recency_parts(histories: list, half_life: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Each history's distinct items in row order, one history after the other, flat; with a
    ``half_life`` (in items; 0: none) each one's weight ``0.5 ** (age / half_life)``, its age
    counted in items from the end of the history to its latest occurrence (the newest item: age
    0, weight 1), else None; and how many distinct items each history has. One stable sort of the
    batch's (history, item) keys, each history read newest first, so a key's first place holds
    its latest occurrence: no Python step per item."""
    if len(histories) == 1:  # a single request's history: no batch bookkeeping
        flat = keys = np.asarray(histories[0], np.int64)[::-1]
        owner = starts = None
    else:
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        flat = (np.concatenate([np.asarray(h, np.int64)[::-1] for h in histories]) if lengths.sum()
                else np.zeros(0, np.int64))
        owner = np.repeat(np.arange(len(histories)), lengths)
        starts = np.cumsum(lengths) - lengths
        keys = owner * (int(flat.max()) + 1) + flat if len(flat) else flat
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.ones(len(order), bool)
    first[1:] = ordered[1:] != ordered[:-1]
    at = order[first]  # each distinct (history, item)'s newest occurrence, by history then item
    if owner is None:
        age, counts = at, np.array([len(at)])
    else:
        whose = owner[at]
        age, counts = at - starts[whose], np.bincount(whose, minlength=len(histories))
    if not half_life:
        return flat[at], None, counts
    return flat[at], np.power(0.5, age.astype(np.float32) / np.float32(half_life)), counts


def collab_queries(query_side: np.ndarray, histories: list, half_life: float = 0.0) -> np.ndarray:
    """Each history's collaborative query: the sum of its *distinct* items' query-side vectors
    (a set, as in EASE: repeats count once), each weighted by its recency when ``half_life``
    (in items, chosen on validation and stored in the version) is set, float32, summed in
    row order, unit length; zeros for an empty history. One history or many: the same sums in
    the same order."""
    items, weights, lengths = recency_parts(histories, half_life)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.zeros((len(histories), query_side.shape[1]), np.float32)
    budget = max(1, GATHER_BYTES // (4 * max(query_side.shape[1], 1)))  # rows gathered at a time
    first = 0
    while first < len(histories):  # users in groups whose gathered rows stay in cache (an exact model's are wide)
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + budget, side="right")))
        part = slice(int(starts[first]), int(ends[last - 1]))
        if part.stop > part.start:
            rows = query_side[items[part]]
            if half_life:
                rows *= weights[part][:, None]
            used = np.flatnonzero(lengths[first:last])
            out[first:last][used] = np.add.reduceat(rows, starts[first:last][used] - part.start, axis=0)
        first = last
    return unit(out)


def hybrid_queries(content_profiles: np.ndarray, collab: np.ndarray, project_query: np.ndarray | None) -> np.ndarray:
    """What the index is searched with: content profiles (m x d) beside their collaborative
    queries (m x rank, or 1 x rank shared by all m), through ``project_query`` when the
    version is projected. One matrix product on the concatenated full-width rows."""
    content, collab = np.asarray(content_profiles, dtype=np.float32), np.asarray(collab, dtype=np.float32)
    full = np.concatenate([content, np.broadcast_to(collab, (len(content), collab.shape[1]))], axis=1)
    return full @ project_query if project_query is not None else full


@dataclass
class Projection:
    """A hybrid index at the content embedding's width. The full hybrid vectors (an item's
    ``[content, weight x item-side]``, a profile's ``[content profile, collaborative query]``)
    are ``d + rank`` wide; the index holds ``item_vector @ item`` and a profile is searched as
    ``profile @ query``, both ``d`` wide. Fitted offline (``offline.collab.fit_projection``)."""

    item: np.ndarray  # (d + rank) x d, float32
    query: np.ndarray  # (d + rank) x d, float32
    info: dict = field(default_factory=dict)

    def effective(self, content: np.ndarray, weighted_item: np.ndarray) -> np.ndarray:
        """What the items score as after the projection, full width again: a full-width
        profile's inner product with these equals its projected product with the index rows."""
        return index_rows(content, weighted_item, self.item) @ self.query.T


def index_rows(content: np.ndarray, weighted_item: np.ndarray | None, project_item: np.ndarray | None,
               chunk: int = CHUNK) -> np.ndarray:
    """What the index holds for these items: the content vectors; for a hybrid the weighted
    item-side collaborative vectors beside them; projected (``[content, weighted] @
    project_item``, computed in row chunks from the two blocks, never the full-width matrix)
    when the version is."""
    if weighted_item is None:
        return content
    if project_item is None:
        return np.hstack([content, weighted_item]).astype(np.float32)
    d = content.shape[1]
    out = np.empty((len(content), project_item.shape[1]), np.float32)
    for start in range(0, len(content), chunk):
        part = slice(start, start + chunk)
        out[part] = np.asarray(content[part], np.float32) @ project_item[:d] + weighted_item[part] @ project_item[d:]
    return out
