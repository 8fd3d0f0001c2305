"""The live catalog's change log (the items API's puts, patches, deletes) in the Redis store.
Keys (under the store's prefix): ``items:seq``, a counter (INCR) that hands out ``seq``;
``items:log``, a sorted set of the changes scored by ``seq``, each member ``<seq>:<JSON of
[item id, op, timestamp, fields]>`` (the ``seq`` keeps two equal changes apart). A batch is one
Lua script, which takes each ``seq`` and adds the change in the same step: no change is readable
while one with a lower ``seq`` is still to come. The counter is never reset, so a pruned ``seq``
is never handed out again. Durability is the store's (``appendfsync always``).

``items:vec:<version>``: a hash of the embeddings a server computed for live items in that
version, field ``<seq>:<item id>``, value the float32 bytes in base64 (the client decodes
replies as text): a cache, pruned with the changes."""

from __future__ import annotations

import base64
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
VECTOR_CHUNK = 500  # cached embeddings read per HSCAN while pruning


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
                self._prune_vectors(int(through))
                return erased
            upto = min(int(through), int(first[0][1]) + PRUNE_CHUNK - 1)
            erased += int(self._call(self._r.zremrangebyscore, key, "-inf", upto))

    def _prune_vectors(self, through: int) -> None:
        for key in self._call(lambda: list(self._r.scan_iter(f"{self.prefix}items:vec:*", count=1000))):
            cursor = 0
            while True:
                cursor, fields = self._call(lambda: self._r.hscan(key, cursor, count=VECTOR_CHUNK))
                old = [f for f in fields if int(f.split(":", 1)[0]) <= through]
                if old:
                    self._call(self._r.hdel, key, *old)
                if not cursor:
                    break

    def add_item_vectors(self, version: str, vectors: Sequence[tuple[str, int, bytes]]) -> int:
        if not vectors:
            return 0
        mapping = {f"{int(seq)}:{item_id}": base64.b64encode(blob).decode() for item_id, seq, blob in vectors}
        self._call(lambda: self._r.hset(f"{self.prefix}items:vec:{version}", mapping=mapping))
        return len(mapping)

    def item_vectors(self, version: str, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        values = self._call(self._r.hmget, f"{self.prefix}items:vec:{version}",
                            [f"{int(seq)}:{item_id}" for item_id, seq in keys])
        return {k: base64.b64decode(v) for k, v in zip(keys, values) if v is not None}
