"""The Lua scripts `RedisState` runs: a request's admission is one atomic script, its settlement
another.

Redis runs a script to completion before any other command, so a check and its update cannot be
interleaved with another replica's. `MemoryState` implements the same steps in Python; keep the
two in step (the tests run every behaviour on both).

Money is integer micro-USD (HINCRBY is exact; HINCRBYFLOAT would drift). Numbers that are not
counts (weights, times) arrive as Python's repr of the float and go through `tonumber`, which
reads back the same double.
"""

from __future__ import annotations

__all__ = ["ADMIT", "BUDGET_READ", "SETTLE"]

# Shared by the budget scripts: a budget is a hash (spent, reserved, r:<id> -> amount, n80, n100)
# and a zset of reservation ids scored by expiry. Expired reservations (a crashed replica's) are
# released here, inside the same atomic step that reads the totals. A budget key lives until its
# period's end plus a grace (`expiry`, epoch seconds; 0: never expires).
_PURGE = """
local function purge(h, z, now)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, rid in ipairs(expired) do
    local amount = redis.call('HGET', h, 'r:' .. rid)
    if amount then
      redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
      redis.call('HDEL', h, 'r:' .. rid)
    end
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
end
local function keep(h, z, expiry, now)
  local at = tonumber(expiry)
  if at > 0 then
    local ttl = math.max(1, math.ceil(at - tonumber(now)))
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', z, ttl)
  end
end
"""

# Shared by the admission and the settlement: add to a per-minute counter. A counter key is
# only ever made here, with its expiry, in the same atomic step: only a new one needs EXPIRE.
# And the request's own values, which travel as one space-separated argument, the last: every
# argument before it is the same for all requests of a caller in a minute, so `RedisState`
# packs those once.
_COUNT = """
local function count(key, amount, ttl)
  if redis.call('INCRBY', key, amount) == tonumber(amount) then
    redis.call('EXPIRE', key, ttl)
  end
end
local function request()
  local values = {}
  for v in string.gmatch(ARGV[#ARGV], '%S+') do
    values[#values + 1] = v
  end
  return values
end
"""

# A request's admission, all or nothing: its rate-limit counters, then its budgets.
# KEYS: per counter (current minute, previous minute), then per budget (hash, zset).
# ARGV: counters (n), counter ttl, per counter its limit, per budget (limit, expiry), then the
# request's "weight now hold_until reservation_id amount cost1 .. costn" (weight: of the
# previous minute; cost i: on counter i).
# A counter admits when previous * weight + current + cost <= limit; a budget when
# spent + reserved + amount <= limit. Returns {status, prev1, cur1, prev2, cur2, ...}, the
# counts as read before any increment, where status is 1 (admitted: every counter incremented,
# the amount reserved on every budget), 0 (a counter refused: nothing changed) or 2 (a budget
# refused: nothing counted or reserved), then for 2: index, spent, reserved, first_refusal.
ADMIT = (
    _PURGE
    + _COUNT
    + """
local n = tonumber(ARGV[1])
local req = request()
local weight, now, hold_until, rid, amount = tonumber(req[1]), req[2], req[3], req[4], req[5]
local out = {1}
local counts = n > 0 and redis.call('MGET', unpack(KEYS, 1, 2 * n)) or {}
for i = 1, n do
  local cur = tonumber(counts[2 * i - 1] or '0')
  local prev = tonumber(counts[2 * i] or '0')
  out[2 * i] = prev
  out[2 * i + 1] = cur
  if prev * weight + cur + tonumber(req[5 + i]) > tonumber(ARGV[2 + i]) then
    out[1] = 0
  end
end
if out[1] == 0 then
  return out
end
local k, a = 2 * n, 2 + n  -- where the budgets' keys and arguments start
local m = (#KEYS - k) / 2
for j = 1, m do
  purge(KEYS[k + 2 * j - 1], KEYS[k + 2 * j], now)
end
for j = 1, m do
  local h = KEYS[k + 2 * j - 1]
  local totals = redis.call('HMGET', h, 'spent', 'reserved')
  local spent, reserved = tonumber(totals[1] or '0'), tonumber(totals[2] or '0')
  if spent + reserved + tonumber(amount) > tonumber(ARGV[a + 2 * j - 1]) then
    local first = redis.call('HSETNX', h, 'n100', 1)
    keep(h, KEYS[k + 2 * j], ARGV[a + 2 * j], now)
    out[1] = 2
    for _, v in ipairs({j, spent, reserved, first}) do
      table.insert(out, v)
    end
    return out
  end
end
for i = 1, n do
  count(KEYS[2 * i - 1], req[5 + i], ARGV[2])
end
for j = 1, m do
  local h = KEYS[k + 2 * j - 1]
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('HSET', h, 'r:' .. rid, amount)
  redis.call('ZADD', KEYS[k + 2 * j], hold_until, rid)
  keep(h, KEYS[k + 2 * j], ARGV[a + 2 * j], now)
end
return out
"""
)

# A request's settlement, unconditional: the output tokens counted, the reservation released and
# the actual cost charged. KEYS: current-minute token counters, then per budget (hash, zset).
# ARGV: counters (n), counter ttl, per budget (limit, expiry), then the request's
# "tokens reservation_id charge now".
# Returns the thresholds crossed for the first time this period as {index, percent, spent, ...}.
SETTLE = (
    _PURGE
    + _COUNT
    + """
local n = tonumber(ARGV[1])
local req = request()
local tokens, rid, charge, now = req[1], req[2], tonumber(req[3]), req[4]
for i = 1, n do
  count(KEYS[i], tokens, ARGV[2])
end
local crossed = {}
for j = 1, (#KEYS - n) / 2 do
  local h, z = KEYS[n + 2 * j - 1], KEYS[n + 2 * j]
  local amount = redis.call('HGET', h, 'r:' .. rid)
  if amount then
    redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('ZREM', z, rid)
  end
  local spent = redis.call('HINCRBY', h, 'spent', charge)
  local limit = tonumber(ARGV[1 + 2 * j])
  for _, pct in ipairs({80, 100}) do
    if spent * 100 >= limit * pct and redis.call('HSETNX', h, 'n' .. pct, 1) == 1 then
      table.insert(crossed, j)
      table.insert(crossed, pct)
      table.insert(crossed, spent)
    end
  end
  keep(h, z, ARGV[2 + 2 * j], now)
end
return crossed
"""
)

# KEYS: hash, zset. ARGV: now. Returns {spent, reserved} after releasing expired reservations.
BUDGET_READ = (
    _PURGE
    + """
purge(KEYS[1], KEYS[2], ARGV[1])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
return {spent, reserved}
"""
)
