"""The attribution rule, the one place it is written: which list shown (impression) an event
is credited to. The online report, the tests and the benchmarks all go through ``attribute``.

- An event that names a ``recommendation_id`` is credited to that impression only when the
  impression was shown to the same user and held the event's item. Otherwise (an id the log
  does not hold, another user's list, an item the list did not show) the event stays
  unattributed and is counted as ``unverified``: an id is never second-guessed by the window.
- An event without an id is credited to the latest impression that showed its item to its
  user at or before the event, no more than ``window_s`` seconds before it.
- Events and impressions are merged in time order; at equal times the impression comes first
  (a list is shown before it is clicked). An event whose id names an impression logged later
  than the event itself (a client clock behind the server's) is therefore unverified.

Memory is bounded by the windows, not by the log: an impression is looked up by user for
``window_s`` and by id for ``id_window_s`` after it was shown, then handed on with what it
earned and forgotten. Impressions shown before ``since`` are read (as far back as the longer
window) only so that events after ``since`` can still find them; they are not handed on."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from groundrec.shared.events.store import Event, Impression

# What an impression earned: (0-based position of the engaged item, event type), one entry per
# event credited to it, in time order.
Engagement = list[tuple[int, str]]
Shown = tuple[Impression, Engagement]


@dataclass
class AttributionCounts:
    events: int = 0  # events read (at or after ``since``)
    by_id: int = 0  # credited through their recommendation_id
    by_window: int = 0  # credited by the window rule (no id)
    unverified: int = 0  # named an id that is unknown, another user's, or did not show the item
    unattributed: int = 0  # no id, and no list showed the item to the user within the window
    impressions: int = 0  # impressions handed on (at or after ``since``)
    context_impressions: int = 0  # read from before ``since`` only to attribute later events


def attribute(events: Iterable[list[Event]], impressions: Iterable[list[Impression]], counts: AttributionCounts,
              *, since: float | None = None, window_s: float = 1800.0, id_window_s: float = 7 * 86_400.0,
              batch: int = 50_000) -> Iterator[list[Shown]]:
    """Stream ``events`` and ``impressions`` (chunks, each stream in time order) and yield, in
    batches of about ``batch``, every impression at or after ``since`` with the events credited
    to it (``Shown``: the impression and its engagement), once no later event can change it.
    ``counts`` is filled as it goes. Pass the impressions from ``since - max(window_s,
    id_window_s)`` so that events just after ``since`` find the lists they came from."""
    start = float("-inf") if since is None else since
    keep = max(window_s, id_window_s)
    by_user: dict[str, deque[list]] = {}  # impressions within window_s of now, per user, oldest first
    by_id: dict[str, list] = {}  # impressions within ``keep`` of now
    recent: deque[list] = deque()  # by_user's records, oldest first
    held: deque[list] = deque()  # by_id's records, oldest first
    out: list[Shown] = []
    shown_iter = iter(impressions)
    pending: list[Impression] = []
    pos = 0
    next_ts = float("inf")

    def refill() -> float:
        nonlocal pending, pos
        for chunk in shown_iter:
            if chunk:
                pending, pos = chunk, 0
                return chunk[0].timestamp
        pending, pos = [], 0
        return float("inf")

    def show(m: Impression) -> None:
        rec = [m, None]  # the impression, its engagement (None until an event is credited)
        by_id[m.recommendation_id] = rec
        held.append(rec)
        if m.user_id is not None:
            recent.append(rec)
            by_user.setdefault(m.user_id, deque()).append(rec)

    def forget(now: float) -> None:
        horizon = now - window_s
        while recent and recent[0][0].timestamp < horizon:
            user = recent.popleft()[0].user_id
            mine = by_user[user]
            mine.popleft()  # the user's oldest: records enter both queues in time order
            if not mine:
                del by_user[user]
        horizon = now - keep
        while held and held[0][0].timestamp < horizon:
            rec = held.popleft()
            m = rec[0]
            if by_id.get(m.recommendation_id) is rec:
                del by_id[m.recommendation_id]
            if m.timestamp >= start:
                counts.impressions += 1
                out.append((m, rec[1] or []))
            else:
                counts.context_impressions += 1

    next_ts = refill()
    for chunk in events:
        for e in chunk:
            t = e.timestamp
            while next_ts <= t:  # the lists shown up to this event, first
                show(pending[pos])
                pos += 1
                next_ts = pending[pos].timestamp if pos < len(pending) else refill()
            if (held and held[0][0].timestamp < t - keep) or (recent and recent[0][0].timestamp < t - window_s):
                forget(t)
                if len(out) >= batch:
                    yield out
                    out = []
            counts.events += 1
            rid = e.recommendation_id
            if rid is not None:
                rec = by_id.get(rid)
                if rec is not None and rec[0].user_id == e.user_id and e.item_id in rec[0].items:
                    _credit(rec, e)
                    counts.by_id += 1
                else:
                    counts.unverified += 1
                continue
            mine = by_user.get(e.user_id)
            if mine is not None:
                for rec in reversed(mine):  # latest first; all within the window (forget ran)
                    if e.item_id in rec[0].items:
                        _credit(rec, e)
                        counts.by_window += 1
                        break
                else:
                    counts.unattributed += 1
            else:
                counts.unattributed += 1
    forget(float("inf"))  # no event is left to change a list held
    while next_ts < float("inf"):  # lists shown after the last event: nothing to credit them
        m = pending[pos]
        pos += 1
        next_ts = pending[pos].timestamp if pos < len(pending) else refill()
        if m.timestamp >= start:
            counts.impressions += 1
            out.append((m, []))
        else:
            counts.context_impressions += 1
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def _credit(rec: list, e: Event) -> None:
    entry = (rec[0].items.index(e.item_id), e.type)
    if rec[1] is None:
        rec[1] = [entry]
    else:
        rec[1].append(entry)
