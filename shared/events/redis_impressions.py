"""The lists shown (impressions) in the Redis store. Keys (under the store's prefix):
``ilog``, a stream of impressions in the order logged (field ``t``: time, ``j``: the
impression as JSON; what the online report scans); ``imp:<recommendation id>``, the stream
entry of that impression (lookup by id, idempotency); ``ui:<user>``, the user's impressions
(erasure). Each write is one Lua script: a batch is applied whole, a logged id is skipped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from groundrec.shared.events.redis_lua import chunk_prune
from groundrec.shared.events.store import Impression, impression_from_json, impression_json, impression_table, user_key

# ARGV: prefix, then 5 values per impression: recommendation id, user ('' for none), ts, JSON, the
# user's key ('' for none): a list of a user erased at or after its time is not stored.
ADD = """
local p = ARGV[1]
local stored = 0
for i = 2, #ARGV, 5 do
  local rid, user, ts, body = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local erased = ARGV[i+4] ~= '' and redis.call('HGET', p .. 'erasures', ARGV[i+4])
  if not (erased and tonumber(erased) >= tonumber(ts)) and redis.call('EXISTS', p .. 'imp:' .. rid) == 0 then
    local sid = redis.call('XADD', p .. 'ilog', '*', 't', ts, 'j', body)
    redis.call('SET', p .. 'imp:' .. rid, sid)
    if user ~= '' then redis.call('SADD', p .. 'ui:' .. user, sid .. '\\31' .. rid) end
    stored = stored + 1
  end
end
return stored
"""

# ARGV: prefix, user.
DELETE = """
local p, user = ARGV[1], ARGV[2]
local members = redis.call('SMEMBERS', p .. 'ui:' .. user)
for _, m in ipairs(members) do
  local sid, rid = string.match(m, '^([^\\31]+)\\31(.*)$')
  redis.call('XDEL', p .. 'ilog', sid)
  redis.call('DEL', p .. 'imp:' .. rid)
end
redis.call('DEL', p .. 'ui:' .. user)
return #members
"""

# Erases one chunk's impressions older than ``before`` (``user`` and ``rid`` read from the JSON).
PRUNE = chunk_prune("ilog", """
    local m = cjson.decode(f['j'])
    redis.call('DEL', p .. 'imp:' .. m['recommendation_id'])
    if type(m['user_id']) == 'string' then
      redis.call('SREM', p .. 'ui:' .. m['user_id'], id .. '\\31' .. m['recommendation_id'])
    end""")


class RedisImpressions:
    """The impression half of ``RedisStore`` (which provides ``_r``, ``_call``, ``prefix``)."""

    def _scripts_for_impressions(self) -> None:
        self._add_imp = self._r.register_script(ADD)
        self._delete_imp = self._r.register_script(DELETE)
        self._prune_imp = self._r.register_script(PRUNE)

    def add_impressions(self, impressions: Sequence[Impression]) -> int:
        if not impressions:
            return 0
        args = [self.prefix]
        for m in impressions:
            args += [m.recommendation_id, m.user_id or "", repr(float(m.timestamp)), impression_json(m),
                     user_key(m.user_id) if m.user_id else ""]
        return int(self._call(lambda: self._add_imp(args=args)))

    def impression(self, recommendation_id: str) -> Impression | None:
        sid = self._call(self._r.get, f"{self.prefix}imp:{recommendation_id}")
        if not sid:
            return None
        entries = self._call(self._r.xrange, f"{self.prefix}ilog", sid, sid)
        return impression_from_json(entries[0][1]["j"]) if entries else None

    def scan_impressions(self, since: float | None = None, chunk: int = 50_000) -> Iterator[list[Impression]]:
        start = "-"
        while True:
            entries = self._call(self._r.xrange, f"{self.prefix}ilog", start, "+", chunk)
            if not entries:
                return
            batch = [impression_from_json(f["j"]) for _, f in entries
                     if since is None or float(f["t"]) >= since]
            if batch:
                yield batch
            if len(entries) < chunk:
                return
            start = "(" + entries[-1][0]

    def scan_impression_columns(self, since: float | None = None, chunk: int = 50_000, until: float | None = None):
        """``_entries`` is ``RedisStore``'s."""
        lo, hi = (float("-inf") if since is None else since), (float("inf") if until is None else until)
        for entries in self._entries("ilog", chunk):
            bodies = [f["j"] for _, f in entries if lo <= float(f["t"]) < hi]
            if bodies:
                yield impression_table(bodies)

    def prune_impressions(self, before: float, chunk: int = 5_000) -> int:
        start, erased = "-", 0
        while True:
            last, n = self._call(lambda: self._prune_imp(args=[self.prefix, start, chunk, repr(float(before))]))
            erased += int(n)
            if not last:
                return erased
            start = "(" + last

    def _delete_impressions(self, user_id: str) -> int:
        return int(self._call(lambda: self._delete_imp(args=[self.prefix, user_id])))
