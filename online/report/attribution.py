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
    inf = float("inf")
    # A record: [timestamp, user, items, recommendation id, impression, engagement or None].
    by_user: dict[str, list[list]] = {}  # records within window_s of now, per user, oldest first
    by_id: dict[str, list] = {}  # records within ``keep`` of now
    recent: deque[list] = deque()  # by_user's records, oldest first
    held: deque[list] = deque()  # by_id's records, oldest first
    out: list[Shown] = []
    shown_iter = iter(impressions)
    pending: list[Impression] = []
    pos = 0
    # Records leave their queues in sweeps, ``slack`` seconds after the oldest is due: the lookups
    # check both windows themselves, so a record kept a little longer changes nothing.
    slack = min(window_s, 60.0)
    due = inf  # the time after which the oldest record is due to leave, plus slack
    n_events = n_id = n_window = n_unverified = 0

    def refill() -> float:
        nonlocal pending, pos
        for chunk in shown_iter:
            if chunk:
                pending, pos = chunk, 0
                return chunk[0].timestamp
        pending, pos = [], 0
        return inf

    def show(m: Impression) -> None:
        nonlocal due
        rec = [m.timestamp, m.user_id, m.items, m.recommendation_id, m, None]
        by_id[m.recommendation_id] = rec
        held.append(rec)
        if m.user_id is not None:
            recent.append(rec)
            mine = by_user.get(m.user_id)
            if mine is None:
                by_user[m.user_id] = [rec]  # a user's lists within a window are few: a list, not a deque
            else:
                mine.append(rec)
        if due == inf:
            due = m.timestamp + min(window_s, keep) + slack

    def forget(now: float) -> None:
        nonlocal due
        horizon = now - window_s
        while recent and recent[0][0] < horizon:
            user = recent.popleft()[1]
            mine = by_user[user]
            del mine[0]  # the user's oldest: records enter both queues in time order
            if not mine:
                del by_user[user]
        horizon = now - keep
        while held and held[0][0] < horizon:
            rec = held.popleft()
            if by_id.get(rec[3]) is rec:
                del by_id[rec[3]]
            if rec[0] >= start:
                counts.impressions += 1
                out.append((rec[4], rec[5] or []))
            else:
                counts.context_impressions += 1
        due = min(recent[0][0] + window_s if recent else inf, held[0][0] + keep if held else inf) + slack

    def tally() -> None:
        counts.events, counts.by_id, counts.by_window, counts.unverified = n_events, n_id, n_window, n_unverified
        counts.unattributed = n_events - n_id - n_window - n_unverified

    next_ts = refill()
    for chunk in events:
        n_events += len(chunk)
        for e in chunk:
            t = e.timestamp
            while next_ts <= t:  # the lists shown up to this event, first
                show(pending[pos])
                pos += 1
                next_ts = pending[pos].timestamp if pos < len(pending) else refill()
            if t > due:
                forget(t)
                if len(out) >= batch:
                    tally()
                    yield out
                    out = []
            rid = e.recommendation_id
            if rid is not None:
                rec = by_id.get(rid)
                if (rec is not None and rec[1] == e.user_id and e.item_id in rec[2]
                        and rec[0] >= t - id_window_s):
                    _credit(rec, e)
                    n_id += 1
                else:
                    n_unverified += 1
                continue
            mine = by_user.get(e.user_id)
            if mine is not None:
                horizon = t - window_s
                for rec in reversed(mine):  # latest first
                    if rec[0] < horizon:
                        break
                    if e.item_id in rec[2]:
                        _credit(rec, e)
                        n_window += 1
                        break
    tally()
    forget(inf)  # no event is left to change a list held
    while next_ts < inf:  # lists shown after the last event: nothing to credit them
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
    entry = (rec[2].index(e.item_id), e.type)
    if rec[5] is None:
        rec[5] = [entry]
    else:
        rec[5].append(entry)
