"""Lua shared by the Redis store's scripts."""

from __future__ import annotations


def chunk_prune(stream: str, erase: str) -> str:
    """A script that erases one chunk of ``stream``'s entries older than ``before``: ``erase``
    (Lua) runs for each, with its stream id ``id`` and fields ``f``. ARGV: prefix, start id
    (exclusive after the first call), count, before; returns {last id read or '', erased}."""
    return """
local p, start, count, before = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local entries = redis.call('XRANGE', p .. '%s', start, '+', 'COUNT', count)
local erased = 0
for _, entry in ipairs(entries) do
  local id, f = entry[1], {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  if tonumber(f['t']) < before then
%s
    redis.call('XDEL', p .. '%s', id)
    erased = erased + 1
  end
end
if #entries < count then return {'', erased} end
return {entries[#entries][1], erased}
""" % (stream, erase, stream)
