"""The Lua scripts `RedisState` runs: each check-and-update is one atomic round trip.

Redis runs a script to completion before any other command, so a check and its update cannot be
interleaved with another replica's. `MemoryState` implements the same steps in Python; keep the
two in step (the tests run every behaviour on both).

Money is integer micro-USD (HINCRBY is exact; HINCRBYFLOAT would drift). Numbers that are not
counts (weights, times) arrive as strings and go through `tonumber`.
"""

from __future__ import annotations

__all__ = ["BUDGET_READ", "BUDGET_RESERVE", "BUDGET_SETTLE", "WINDOW_ADD", "WINDOW_HIT"]

# KEYS: per counter (current minute, previous minute). ARGV: weight of the previous minute, ttl,
# then per counter (limit, cost). All counters are admitted together or none is incremented.
# Returns {allowed, prev1, cur1, prev2, cur2, ...} with the counts read before the increment.
WINDOW_HIT = """
local weight = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = #KEYS / 2
local out = {1}
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  out[2 * i] = prev
  out[2 * i + 1] = cur
  if prev * weight + cur + tonumber(ARGV[2 + 2 * i]) > tonumber(ARGV[1 + 2 * i]) then
    out[1] = 0
  end
end
if out[1] == 1 then
  for i = 1, n do
    redis.call('INCRBY', KEYS[2 * i - 1], ARGV[2 + 2 * i])
    redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
  end
end
return out
"""

# KEYS: current-minute counters. ARGV: amount, ttl. Unconditional (actual tokens, after the call).
WINDOW_ADD = """
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 0
"""

# Shared by the budget scripts: a budget is a hash (spent, reserved, r:<id> -> amount, n80, n100)
# and a zset of reservation ids scored by expiry. Expired reservations (a crashed replica's) are
# released here, inside the same atomic step that reads the totals.
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
local function keep(h, z, ttl)
  if ttl > 0 then
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', z, ttl)
  end
end
"""

# KEYS: per budget (hash, zset). ARGV: now, hold_until, reservation id, amount,
# then per budget (limit, ttl; ttl 0 = never expires).
# Returns {1} when reserved on every budget, else {0, index, spent, reserved, first_refusal}.
BUDGET_RESERVE = (
    _PURGE
    + """
local now = ARGV[1]
local amount = tonumber(ARGV[4])
local n = #KEYS / 2
for i = 1, n do
  purge(KEYS[2 * i - 1], KEYS[2 * i], now)
end
for i = 1, n do
  local h = KEYS[2 * i - 1]
  local spent = tonumber(redis.call('HGET', h, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
  if spent + reserved + amount > tonumber(ARGV[3 + 2 * i]) then
    local first = redis.call('HSETNX', h, 'n100', 1)
    keep(h, KEYS[2 * i], tonumber(ARGV[4 + 2 * i]))
    return {0, i, spent, reserved, first}
  end
end
for i = 1, n do
  local h = KEYS[2 * i - 1]
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('HSET', h, 'r:' .. ARGV[3], amount)
  redis.call('ZADD', KEYS[2 * i], ARGV[2], ARGV[3])
  keep(h, KEYS[2 * i], tonumber(ARGV[4 + 2 * i]))
end
return {1}
"""
)

# KEYS: per budget (hash, zset). ARGV: reservation id, charge, then per budget (limit, ttl).
# Releases the reservation (if it has not expired) and adds the charge to spent; returns the
# thresholds crossed for the first time this period as {index, percent, spent, ...}.
BUDGET_SETTLE = (
    _PURGE
    + """
local rid = ARGV[1]
local charge = tonumber(ARGV[2])
local crossed = {}
for i = 1, #KEYS / 2 do
  local h = KEYS[2 * i - 1]
  local amount = redis.call('HGET', h, 'r:' .. rid)
  if amount then
    redis.call('HINCRBY', h, 'reserved', -tonumber(amount))
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('ZREM', KEYS[2 * i], rid)
  end
  local spent = redis.call('HINCRBY', h, 'spent', charge)
  local limit = tonumber(ARGV[1 + 2 * i])
  for _, pct in ipairs({80, 100}) do
    if spent * 100 >= limit * pct and redis.call('HSETNX', h, 'n' .. pct, 1) == 1 then
      table.insert(crossed, i)
      table.insert(crossed, pct)
      table.insert(crossed, spent)
    end
  end
  keep(h, KEYS[2 * i], tonumber(ARGV[2 + 2 * i]))
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
