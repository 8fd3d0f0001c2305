"""The attribution rule, the one place it is written (``_credit``): which list shown
(impression) an event is credited to. The online report, the tests and the benchmarks all go
through ``attribute_columns`` (``attribute``: the same over objects).

- An event that names a ``recommendation_id`` is credited to that impression only when the
  impression was shown to the same user and held the event's item. Otherwise (an id the log
  does not hold, another user's list, an item the list did not show) the event stays
  unattributed and is counted as ``unverified``: an id is never second-guessed by the window.
- An event without an id is credited to the latest impression that showed its item to its
  user at or before the event, no more than ``window_s`` seconds before it.
- Events and impressions are merged in time order; at equal times the impression comes first
  (a list is shown before it is clicked): an event whose id names a list shown more than
  ``CLOCK_SKEW_S`` after it is unverified. The service keeps an event's id by the same rule
  (``id_in_time``), storing one dated up to that much before its list at the list's time (``id_time``).

Each stream comes in chunks, each in time order, as columns: a chunk of events is matched
against the lists held in one vectorised step (by id; by (user, item) in a sort merge), never
an object per event. Memory is bounded by the windows, not by the log: an impression is held
until no later event can reach it (``max(window_s, id_window_s)`` after it was shown), then
handed on with what it earned and forgotten. Impressions shown before ``since`` are read (as
far back as the longer window) only so that events after ``since`` can still find them; they
are not handed on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa

ID_WINDOW_S = 7 * 86_400.0  # an id is looked up among the lists shown this long before its event (the default)
CLOCK_SKEW_S = 300.0  # an event naming a list may be dated this much before it: a clock behind the server's


def id_time(shown_ts: float, event_ts: float) -> float:
    """When an event naming a list shown at ``shown_ts`` is stored: at its own time, or at the
    list's when dated up to ``CLOCK_SKEW_S`` before it (a client's or replica's clock behind)."""
    return shown_ts if shown_ts - CLOCK_SKEW_S <= event_ts < shown_ts else event_ts


def id_in_time(shown_ts, event_ts, id_window_s: float = ID_WINDOW_S):
    """Whether an event at ``event_ts`` may be credited by id to a list shown at ``shown_ts``:
    no more than ``CLOCK_SKEW_S`` before it (a clock behind the list's: ``id_time``), and no
    more than ``id_window_s`` after (numbers or arrays)."""
    return (shown_ts - CLOCK_SKEW_S <= event_ts) & (shown_ts >= event_ts - id_window_s)

from groundrec.online.report.held import NULL, Held, Reach, Vocab, flat_lists
from groundrec.shared.events.store import Event, Impression, event_table

# What an impression earned: (0-based position of the engaged item, event type), one entry per
# event credited to it, in time order.
Engagement = list[tuple[int, str]]
Shown = tuple[Impression, Engagement]
ITEM_CODES = 1 << 31  # (user, item) as one int64 key


@dataclass
class AttributionCounts:
    events: int = 0  # events read (at or after ``since``)
    by_id: int = 0  # credited through their recommendation_id
    by_window: int = 0  # credited by the window rule (no id)
    unverified: int = 0  # named an id that is unknown, another user's, or did not show the item
    unattributed: int = 0  # no id, and no list showed the item to the user within the window
    impressions: int = 0  # impressions handed on (at or after ``since``)
    context_impressions: int = 0  # read from before ``since`` only to attribute later events


@dataclass
class Attributed:
    """Impressions handed on (``IMPRESSION_COLUMNS`` rows) and what they earned: one entry per
    credited event, ``row`` (in ``shown``), 0-based ``position`` and ``type`` (a code into
    ``types``), in the order of (row, event time)."""

    shown: pa.Table
    row: np.ndarray
    position: np.ndarray
    type: np.ndarray
    types: list[str]


def _credit(held: Held, ts: np.ndarray, users: pa.Array, items: pa.Array, rids: pa.Array,
            window_s: float, id_window_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """The rule over one chunk of events (times, and user, item and recommendation id strings)
    and the impressions held (all those shown up to the chunk's last event): the events credited
    (indices), the impression (g) and position each is credited to, how many of them (the
    first) by id, and the events that named an id (indices)."""
    has_id = rids.is_valid().to_numpy(zero_copy_only=False)
    named = np.flatnonzero(has_id)
    g = np.fromiter((held.by_id.get(r, -1) for r in rids.filter(has_id).to_pylist()), np.int64, len(named))
    k = g - held.base
    ok = g >= 0
    k_ok, e_ok = k[ok], named[ok]
    good = id_in_time(held.ts[k_ok], ts[e_ok], id_window_s)
    k_ok, e_ok = k_ok[good], e_ok[good]
    plain = np.flatnonzero(~has_id)
    near = np.empty(0, np.int64)
    if len(plain) and len(held):  # the lists an event without an id can reach (shown to a user id)
        near = np.flatnonzero((held.ts >= ts[plain].min() - window_s) & (held.ts <= ts[plain].max()) & held.known)
    reach = Reach(held, _distinct(np.concatenate([k_ok, near])))
    user = reach.user_codes(users)  # in the lists reached' codes
    j_id = np.searchsorted(reach.k, k_ok)
    same = (reach.user[j_id] == user[e_ok]) | (reach.user[j_id] == NULL)  # a list shown to no user id: anyone's
    j_id, e_ok = j_id[same], e_ok[same]
    pos_id = reach.position(j_id, reach.item_codes(items.take(pa.array(e_ok))))
    shown = pos_id >= 0
    ev_id, g_id, pos_id = e_ok[shown], reach.k[j_id[shown]] + held.base, pos_id[shown]
    # Without an id: the latest list (by time, then stream order) showing the (user, item).
    if len(near):
        plain = plain[user[plain] >= 0]  # among the users of the lists reached
        item = reach.item_codes(items.take(pa.array(plain)))
        plain, item = plain[item >= 0], item[item >= 0]
        ev_key = user[plain] * ITEM_CODES + item
        j_near = np.searchsorted(reach.k, near)
        which, pos = reach.slots(j_near)
        slot_j = j_near[which]
        slot_item = reach.slot_item[reach.starts[slot_j] + pos]
        slot_key = reach.user[slot_j] * ITEM_CODES + slot_item
        wanted = _among(slot_key, np.sort(ev_key))  # the few slots an event's (user, item) names
        slot_j, slot_item, pos, slot_key = slot_j[wanted], slot_item[wanted], pos[wanted], slot_key[wanted]
        first = np.unique(slot_j * ITEM_CODES + slot_item, return_index=True)[1]  # an item's first position
        slot_j, pos, slot_key = slot_j[first], pos[first], slot_key[first]
        slot_k = reach.k[slot_j]
        maybe = _among(ev_key, np.sort(slot_key))
        cand = plain[maybe]
        n_s = len(slot_k)
        key = np.concatenate([slot_key, ev_key[maybe]])
        when = np.concatenate([held.ts[slot_k], ts[cand]])
        is_event = np.concatenate([np.zeros(n_s, bool), np.ones(len(cand), bool)])
        order = np.lexsort((np.concatenate([slot_k, np.zeros(len(cand), np.int64)]), is_event, when, key))
        last = np.maximum.accumulate(np.where(is_event[order], -1, np.arange(len(order))))
        at = np.flatnonzero(is_event[order])
        src = last[at]
        ev = order[at] - n_s
        hit = src >= 0
        hit[hit] = (key[order[src[hit]]] == key[order[at[hit]]]) & (when[order[src[hit]]] >= ts[cand[ev[hit]]] - window_s)
        slot = order[src[hit]]
        ev_w, g_w, pos_w = cand[ev[hit]], slot_k[slot] + held.base, pos[slot]
    else:
        ev_w = g_w = pos_w = np.empty(0, np.int64)
    return (np.concatenate([ev_id, ev_w]), np.concatenate([g_id, g_w]), np.concatenate([pos_id, pos_w]),
            len(ev_id), named)


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy's own hashes, slow on keys such as user * 2**31 + item)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _among(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``known`` (sorted): ``np.isin`` by binary search (numpy's
    own hashes, slow on such keys)."""
    if not len(known):
        return np.zeros(len(keys), bool)
    return known[np.minimum(np.searchsorted(known, keys), len(known) - 1)] == keys


def attribute_columns(events: Iterable[pa.Table], impressions: Iterable[pa.Table], counts: AttributionCounts, *,
                      since: float | None = None, window_s: float = 1800.0, id_window_s: float = ID_WINDOW_S,
                      batch: int = 50_000, until: float | None = None) -> Iterator[Attributed]:
    """Stream ``events`` and ``impressions`` (``EVENT_COLUMNS`` and ``IMPRESSION_COLUMNS``
    tables, each stream in time order) and yield, in batches of about ``batch`` impressions,
    every impression at or after ``since`` with the events credited to it, once no later event
    can change it. ``counts`` is filled as it goes. Pass the impressions from ``since -
    max(window_s, id_window_s)`` so that events just after ``since`` find the lists they came
    from. With ``until``, a part of a longer run: impressions at or after it are neither handed
    on nor counted, events at or after it are matched (to credit the lists before it) but not
    counted."""
    start = float("-inf") if since is None else since
    end = float("inf") if until is None else until
    keep = max(window_s, id_window_s)
    types = Vocab()
    held = Held()
    shown_iter = iter(impressions)
    pending: pa.Table | None = None
    out: list[Attributed] = []
    seq = 0

    def pull(upto: float) -> bool:
        """Hold the impressions shown up to ``upto``; False once the stream is spent."""
        nonlocal pending
        while True:
            if pending is None or not pending.num_rows:
                pending = next(shown_iter, None)
                if pending is None:
                    return False
                continue
            later = np.flatnonzero(pending["timestamp"].to_numpy() > upto)
            cut = int(later[0]) if len(later) else pending.num_rows
            held.add(pending.slice(0, cut))
            pending = pending.slice(cut)
            if cut < pending.num_rows + cut:
                return True

    def release(k: int) -> None:
        if not k:
            return
        rows, earned = held.release(k)
        ts = rows["timestamp"].to_numpy()
        mine = (ts >= start) & (ts < end)
        counts.context_impressions += int((ts < start).sum())
        counts.impressions += int(mine.sum())
        if not mine.all():
            new_row = np.cumsum(mine) - 1
            earned = earned[:, mine[earned[0]]]
            earned[0] = new_row[earned[0]]
            rows = rows.filter(pa.array(mine))
        if rows.num_rows:
            out.append(Attributed(rows, earned[0], earned[1], earned[2], []))

    def flush(final: bool = False) -> Iterator[Attributed]:
        nonlocal out
        if out and (final or sum(a.shown.num_rows for a in out) >= batch):
            yield _join(out, types.values.to_pylist())
            out = []

    for chunk in _gather(events, keep):
        ts = chunk["timestamp"].to_numpy()
        pull(float(ts.max()) + CLOCK_SKEW_S)  # past the chunk: a log in write order (Redis) is only nearly in time order
        ev, g, pos, n_id, named = _credit(held, ts, chunk["user_id"].combine_chunks(), chunk["item_id"].combine_chunks(),
                                          chunk["recommendation_id"].combine_chunks(), window_s, id_window_s)
        if len(ev):
            held.credit(g, pos, types.encode(chunk["type"].take(pa.array(ev))), seq + ev)
        seq += chunk.num_rows
        counted = ts < end
        counts.events += int(counted.sum())
        counts.by_id += int(counted[ev[:n_id]].sum())
        counts.by_window += int(counted[ev[n_id:]].sum())
        counts.unverified += int(counted[named].sum()) - int(counted[ev[:n_id]].sum())
        counts.unattributed = counts.events - counts.by_id - counts.by_window - counts.unverified
        old = np.flatnonzero(held.ts >= ts.max() - keep)  # held from the first not yet out of reach
        release(int(old[0]) if len(old) else len(held))
        yield from flush()
    release(len(held))  # no event is left to change a list held
    for table in chain([pending] if pending is not None else [], shown_iter):
        held.add(table)  # lists shown after the last event: nothing to credit them
        release(len(held))
        yield from flush()
    yield from flush(final=True)


def _gather(events: Iterable[pa.Table], max_span: float, rows: int = 250_000) -> Iterator[pa.Table]:
    """The event chunks joined into chunks of about ``rows`` (fewer, larger steps: each one
    encodes against the codes known so far), none spanning more than ``max_span`` seconds (so
    that lists are still handed on as the stream is read)."""
    parts: list[pa.Table] = []
    n, first = 0, 0.0
    for chunk in events:
        if not chunk.num_rows:
            continue
        ts = chunk["timestamp"]
        if parts and (n >= rows or ts[len(ts) - 1].as_py() - first > max_span):
            yield pa.concat_tables(parts).combine_chunks()
            parts, n = [], 0
        if not parts:
            first = ts[0].as_py()
        parts.append(chunk)
        n += chunk.num_rows
    if parts:
        yield pa.concat_tables(parts).combine_chunks()


def _join(parts: list[Attributed], types: list[str]) -> Attributed:
    offsets = np.cumsum([0] + [a.shown.num_rows for a in parts])
    return Attributed(pa.concat_tables([a.shown for a in parts]),
                      np.concatenate([a.row + o for a, o in zip(parts, offsets)]),
                      np.concatenate([a.position for a in parts]), np.concatenate([a.type for a in parts]), types)


def attribute(events: Iterable[list[Event]], impressions: Iterable[list[Impression]], counts: AttributionCounts,
              **settings) -> Iterator[list[Shown]]:
    """``attribute_columns`` over chunks of ``Event`` and ``Impression`` objects, yielding each
    impression handed on with its engagement (``Shown``)."""
    objects: dict[str, list[Impression]] = {}

    def tables() -> Iterator[pa.Table]:
        for chunk in impressions:
            for m in chunk:
                objects.setdefault(m.recommendation_id, []).append(m)
            yield impressions_table(chunk)

    for a in attribute_columns((event_table([(e.user_id, e.item_id, e.timestamp, e.type, e.recommendation_id)
                                              for e in chunk]) for chunk in events), tables(), counts, **settings):
        engaged: list[Engagement] = [[] for _ in range(a.shown.num_rows)]
        for r, p, t in zip(a.row.tolist(), a.position.tolist(), a.type.tolist()):
            engaged[r].append((p, a.types[t]))
        yield [(objects[rid].pop(0), e) for rid, e in zip(a.shown["recommendation_id"].to_pylist(), engaged)]


def impressions_table(chunk: list[Impression]) -> pa.Table:
    from groundrec.shared.events.store import IMPRESSION_COLUMNS

    return pa.table([[m.recommendation_id for m in chunk], [m.user_id for m in chunk], [m.timestamp for m in chunk],
                     [m.version for m in chunk], [list(m.items) for m in chunk], [m.arm for m in chunk],
                     [list(m.teams) if m.teams is not None else None for m in chunk]], schema=IMPRESSION_COLUMNS)


__all__ = ["Attributed", "AttributionCounts", "Shown", "attribute", "attribute_columns", "flat_lists"]
