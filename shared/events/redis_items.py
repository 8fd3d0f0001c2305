"""The live catalog's change log (the items API's puts, patches, deletes) in the Redis store.
Keys (under the store's prefix): ``items:seq``, a counter (INCR) that hands out ``seq``;
``items:log``, a sorted set of the changes scored by ``seq``, each member ``<seq>:<JSON of
[item id, op, timestamp, fields]>`` (the ``seq`` keeps two equal changes apart). A batch is one
Lua script, which takes each ``seq`` and adds the change in the same step: no change is readable
while one with a lower ``seq`` is still to come. The counter is never reset, so a pruned ``seq``
is never handed out again. Durability is the store's (``appendfsync always``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from groundrec.shared.events.store import ItemChange

# ARGV: prefix, then one JSON body per change, in order.
ADD = """
local p = ARGV[1]
for i = 2, #ARGV do
  local seq = redis.call('INCR', p .. 'items:seq')
  redis.call('ZADD', p .. 'items:log', seq, string.format('%d', seq) .. ':' .. ARGV[i])
end
return #ARGV - 1
"""
PRUNE_CHUNK = 5_000  # changes erased per command: the server is never blocked for the whole log


class RedisItems:
    """The item-change half of ``RedisStore`` (which provides ``_r``, ``_call``, ``prefix``)."""

    def _scripts_for_items(self) -> None:
        self._add_items = self._r.register_script(ADD)

    def add_item_changes(self, changes: Sequence[ItemChange]) -> int:
        if not changes:
            return 0
        args = [self.prefix] + [json.dumps([c.item_id, c.op, float(c.timestamp), c.fields], ensure_ascii=False)
                                for c in changes]
        return int(self._call(lambda: self._add_items(args=args)))

    def item_changes(self, after: int = 0, limit: int = 10_000) -> list[ItemChange]:
        if limit <= 0:
            return []
        members = self._call(self._r.zrangebyscore, f"{self.prefix}items:log", f"({int(after)}", "+inf", 0,
                             int(limit))
        out = []
        for m in members:
            seq, body = m.split(":", 1)
            item_id, op, ts, fields = json.loads(body)
            out.append(ItemChange(item_id, op, fields, float(ts), int(seq)))
        return out

    def prune_item_changes(self, through: int) -> int:
        key, erased = f"{self.prefix}items:log", 0
        while True:  # seqs are dense (one INCR each): a range of PRUNE_CHUNK seqs is at most that many changes
            first = self._call(self._r.zrange, key, 0, 0, False, True)
            if not first or first[0][1] > through:
                return erased
            upto = min(int(through), int(first[0][1]) + PRUNE_CHUNK - 1)
            erased += int(self._call(self._r.zremrangebyscore, key, "-inf", upto))
