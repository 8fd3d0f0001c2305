"""The shared event store: Redis, for several hosts and Ray Serve replicas.

Keys (under ``groundrec:``): ``log``, a stream of every event (what export reads);
``h:<user>``, a sorted set of the user's events by time (what a profile reads, one round
trip); ``ue:<user>``, the user's event ids; ``eid:<id>``, an id seen (idempotency); the
impressions' keys are in ``redis_impressions``, the live catalog's changes' in
``redis_items``. Each
``add`` is one Lua script, so a batch is applied whole or not at all and a retried event id
is skipped atomically. Durability is Redis's: run it with ``appendonly yes`` and
``appendfsync always`` for no loss of an acknowledged event (docs/operations.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from groundrec.shared.events.redis_impressions import RedisImpressions
from groundrec.shared.events.redis_items import RedisItems
from groundrec.shared.events.redis_lua import chunk_prune
from groundrec.shared.events.store import Event, StoreUnavailable, event_table, user_key

def _stored_order(member: tuple[str, float]) -> tuple[float, int, int]:
    """A history member's time, then its stream id as numbers (either form of the id)."""
    ms, _, seq = member[0].split(SEP, 1)[0].partition("-")
    return member[1], int(ms), int(seq)


PREFIX = "groundrec:"
SEP = "\x1f"
TIMEOUT_S = 2.0
POPULARITY_MARGIN_S = 86_400.0  # popularity reads the entries stored from this long before its window

# ARGV: prefix, then 8 values per event: event id ('' for none), user, item, ts, type, weight,
# recommendation id ('' for none), the user's key (``user_key``: an event of a user erased at or
# after its time is not stored, as SQLite's ``NOT_ERASED``).
# A history member begins with its stream id zero-padded (``SORTED``), so that events of equal
# time are read back in the order they were stored, as SQLite reads them (a sorted set orders
# equal scores by member text, and "ms-10" < "ms-2"); members stored before it begin with the
# bare stream id, which ``STREAM_ID`` reads back from either form.
SORTED = """
local function sorted_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.format('%015d-%010d', tonumber(ms), tonumber(seq))
end
"""
STREAM_ID = """
local function stream_id(key)
  local ms, seq = string.match(key, '^(%d+)-(%d+)$')
  return string.format('%d-%d', tonumber(ms), tonumber(seq))
end
"""
ADD = SORTED + """
local p = ARGV[1]
local stored = 0
for i = 2, #ARGV, 8 do
  local eid, user, item, ts, typ, w, rid = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6]
  local erased = redis.call('HGET', p .. 'erasures', ARGV[i+7])
  local fresh = not (erased and tonumber(erased) >= tonumber(ts))
  if fresh and eid ~= '' then
    fresh = redis.call('SET', p .. 'eid:' .. eid, '1', 'NX')
  end
  if fresh then
    local id = redis.call('XADD', p .. 'log', '*', 'u', user, 'i', item, 't', ts, 'y', typ, 'w', w, 'e', eid,
                          'r', rid)
    redis.call('ZADD', p .. 'h:' .. user, ts, sorted_id(id) .. '\\31' .. item .. '\\31' .. w)
    if eid ~= '' then redis.call('SADD', p .. 'ue:' .. user, eid) end
    stored = stored + 1
  end
end
return stored
"""

# ARGV: prefix, user. Erases the user's stream entries, history, event ids.
DELETE = STREAM_ID + """
local p, user = ARGV[1], ARGV[2]
local members = redis.call('ZRANGE', p .. 'h:' .. user, 0, -1)
for _, m in ipairs(members) do
  local id = stream_id(string.match(m, '^([^\\31]+)'))
  redis.call('XDEL', p .. 'log', id)
end
for _, eid in ipairs(redis.call('SMEMBERS', p .. 'ue:' .. user)) do
  redis.call('DEL', p .. 'eid:' .. eid)
end
redis.call('DEL', p .. 'h:' .. user, p .. 'ue:' .. user)
return #members
"""

PRUNE = SORTED + chunk_prune("log", """
    local rest = '\\31' .. f['i'] .. '\\31' .. f['w']
    redis.call('ZREM', p .. 'h:' .. f['u'], sorted_id(id) .. rest, id .. rest)
    if f['e'] ~= '' then
      redis.call('DEL', p .. 'eid:' .. f['e'])
      redis.call('SREM', p .. 'ue:' .. f['u'], f['e'])
    end""")


MARK_FIELD = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old or tonumber(old) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
"""


class RedisStore(RedisImpressions, RedisItems):
    def __init__(self, url: str, prefix: str = PREFIX):
        import redis

        self.url, self.prefix, self._errors, self._timeout = url, prefix, (redis.RedisError, OSError), redis.TimeoutError
        self._r = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                       health_check_interval=10, decode_responses=True)
        self._add = self._r.register_script(ADD)
        self._delete = self._r.register_script(DELETE)
        self._prune = self._r.register_script(PRUNE)
        self._mark_field = self._r.register_script(MARK_FIELD)
        self._scripts_for_impressions()
        self._scripts_for_items()
        self._async = None  # redis.asyncio client of the service's event loop (ahistories)

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        """``e`` as the store's failure; a timeout came after the call was sent: Redis may have run it."""
        return StoreUnavailable(f"events store {self.url}: {e}", maybe_done=isinstance(e, self._timeout))

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self._errors as e:
            raise self._unavailable(e) from None

    def add(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        args = [self.prefix]
        for e in events:
            args += [e.event_id or "", e.user_id, e.item_id, repr(float(e.timestamp)), e.type, repr(float(e.weight)),
                     e.recommendation_id or "", user_key(e.user_id)]
        return int(self._call(lambda: self._add(args=args)))

    @staticmethod
    def _parse(members: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
        if any(member[:1] != "0" for member, _ in members):  # stored before ids were zero-padded (``SORTED``):
            members = sorted(members, key=_stored_order)  # ties in time by stream id, not member text
        out = []
        for member, ts in members:
            item, weight = member.split(SEP, 1)[1].rsplit(SEP, 1)  # log id, item, weight (an old item id may hold SEP)
            out.append((item, float(ts), float(weight)))
        return out

    def history(self, user_id: str, limit: int) -> list[tuple[str, float, float]]:
        return self._parse(self._call(self._r.zrange, f"{self.prefix}h:{user_id}", -limit, -1, False, True))

    def histories(self, user_ids: Sequence[str], limit: int) -> list[list[tuple[str, float, float]]]:
        def run():
            pipe = self._r.pipeline(transaction=False)
            for u in user_ids:
                pipe.zrange(f"{self.prefix}h:{u}", -limit, -1, withscores=True)
            return pipe.execute()
        return [self._parse(m) for m in self._call(run)]

    async def ahistories(self, user_ids: Sequence[str], limit: int) -> list[list[tuple[str, float, float]]]:
        """One pipelined round trip on redis.asyncio (no thread, no blocked loop); its client is
        made on first use, in the loop that uses it."""
        if self._async is None:
            import redis.asyncio

            self._async = redis.asyncio.Redis.from_url(self.url, socket_timeout=TIMEOUT_S,
                                                       socket_connect_timeout=TIMEOUT_S, decode_responses=True)
        try:
            pipe = self._async.pipeline(transaction=False)
            for u in user_ids:
                pipe.zrange(f"{self.prefix}h:{u}", -limit, -1, withscores=True)
            found = await pipe.execute()
        except self._errors as e:
            raise self._unavailable(e) from None
        return [self._parse(m) for m in found]

    def delete_user(self, user_id: str) -> int:
        """The erasure remembered (``erasures``: at the latest of now and the user's latest event,
        so that an event dated ahead goes too), then the user's events, then the lists shown to
        them."""
        latest = self._call(self._r.zrange, f"{self.prefix}h:{user_id}", -1, -1, False, True)
        at = repr(max([time.time(), *(float(score) for _, score in latest)]))  # an event dated ahead goes too
        # the latest erasure kept, as SQLite keeps it (an erasure again, without the event dated ahead, is earlier)
        self._call(lambda: self._mark_field(keys=[f"{self.prefix}erasures"], args=[user_key(user_id), at]))
        n = int(self._call(lambda: self._delete(args=[self.prefix, user_id])))
        self._delete_impressions(user_id)
        return n

    def erasures(self) -> dict[str, float]:
        return {key: float(at) for key, at in self._call(self._r.hgetall, f"{self.prefix}erasures").items()}

    def prune(self, before: float, chunk: int = 5_000) -> int:
        start, erased = "-", 0
        while True:  # one script per chunk: the server is never blocked for the whole log
            last, n = self._call(lambda: self._prune(args=[self.prefix, start, chunk, repr(float(before))]))
            erased += int(n)
            if not last:
                return erased
            start = "(" + last

    def scan(self, since: float | None = None, chunk: int = 50_000, stored_since: float | None = None
             ) -> Iterator[list[Event]]:
        """``stored_since``: read only the entries stored from then on (the stream's ids are their
        arrival times), not the whole log."""
        start = "-" if stored_since is None else f"{max(0, int(stored_since * 1000))}-0"
        while True:
            entries = self._call(self._r.xrange, f"{self.prefix}log", start, "+", chunk)
            if not entries:
                return
            batch = [Event(f["u"], f["i"], float(f["t"]), f["y"], float(f["w"]), f.get("e") or None,
                           f.get("r") or None) for _, f in entries]
            if since is not None:
                batch = [e for e in batch if e.timestamp >= since]
            if batch:
                yield batch
            if len(entries) < chunk:
                return
            start = "(" + entries[-1][0]

    def scan_columns(self, since: float | None = None, chunk: int = 50_000, until: float | None = None,
                     named_only: bool = False):
        lo, hi = (float("-inf") if since is None else since), (float("inf") if until is None else until)
        for entries in self._entries("log", chunk):
            rows = [(f["u"], f["i"], t, f["y"], f.get("r") or None) for t, f in ((float(f["t"]), f) for _, f in entries)
                    if lo <= t < hi and (f.get("r") or not named_only)]
            if rows:
                yield event_table(rows)

    def time_span(self, since: float | None = None) -> tuple[float, float] | None:
        first = self._call(self._r.xrange, f"{self.prefix}log", "-", "+", 1)
        last = self._call(self._r.xrevrange, f"{self.prefix}log", "+", "-", 1)
        if not first:
            return None
        lo, hi = float(first[0][1]["t"]), float(last[0][1]["t"])
        lo = lo if since is None else max(lo, since)
        return None if hi < lo else (lo, hi)

    def _entries(self, key: str, chunk: int) -> Iterator[list]:
        """The stream ``key``'s entries in order, ``chunk`` at a time."""
        start = "-"
        while entries := self._call(self._r.xrange, f"{self.prefix}{key}", start, "+", chunk):
            yield entries
            if len(entries) < chunk:
                return
            start = "(" + entries[-1][0]

    def popularity(self, since: float | None = None) -> dict[str, float]:
        """Weights per item of the events at or after ``since``, read from the entries stored
        since a day before it (every worker asks each minute: the whole log was read each time;
        an event stored over a day before its own time, dated in the future, is not counted)."""
        out: dict[str, float] = {}
        for batch in self.scan(since, stored_since=None if since is None else since - POPULARITY_MARGIN_S):
            for e in batch:
                out[e.item_id] = out.get(e.item_id, 0.0) + e.weight
        return out

    def count(self) -> int:
        return int(self._call(self._r.xlen, f"{self.prefix}log"))

    def close(self) -> None:
        self._r.close()
