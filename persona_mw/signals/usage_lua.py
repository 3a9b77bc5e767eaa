"""The Lua scripts of the Redis usage store (:mod:`persona_mw.signals.usage_redis`): the fold
of :meth:`UsageDigest.add <persona_mw.signals.compute.UsageDigest.add>` run where the data is,
so a write folds atomically in one round trip; a read of the rollup; and an erasure that counts
what it deletes. Each is sent by its SHA-1 (``EVALSHA``) and loaded when a server does not know it.
"""

from __future__ import annotations

import hashlib

__all__ = ["APPEND_SHA", "ERASE_SHA", "READ_SHA", "SCRIPTS"]

# The fold of UsageDigest.add, in Lua (the two are held equal by tests/signals/test_rollup.py).
# KEYS: events, id, index, live, pending, days. ARGV: now ms, TTL s ('0': none), user id, day
# key prefix, idle us, cap us, tail us, reorder window (score units), max pending, then score,
# member pairs. Numbers go back to Redis through string.format('%.0f'): Lua's tostring keeps 14
# digits and a score has 16.
APPEND = """
local now_ms, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local dayp = ARGV[4]
local idle, cap, tail = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window, maxp = tonumber(ARGV[8]), tonumber(ARGV[9])
local function num(x) return string.format('%.0f', x) end
local new = {}
for i = 10, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1]) == 1 then
    new[#new + 1] = {tonumber(ARGV[i]), ARGV[i + 1]}
  end
end
if #new == 0 then return 0 end
local st = {}
local raw = redis.call('HGETALL', KEYS[4])
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local ls, lt, ld, lz, lm = tonumber(st.ls), tonumber(st.lt), st.ld, st.lz, st.lm
local ss, n, mx = tonumber(st.ss), tonumber(st.n or '0'), tonumber(st.mx)
local sd = {}
if st.sd then for d in string.gmatch(st.sd, '[^,]+') do sd[d] = true end end
local touched = {}
local function incr(d, f, by)
  redis.call('HINCRBY', dayp .. d, f, by)
  touched[d] = true
end
local function fold(score, e, late)
  if not late then
    if lt == nil or e.t - lt > idle then
      if lt ~= nil then incr(ld, 'a', tail) end
      ss = e.t
      sd = {}
    else
      incr(ld, 'a', math.min(e.t - lt, cap))
    end
  end
  local d = e.d
  if e.r == 'u' then
    incr(d, 'm', 1)
    if (not late or (ss ~= nil and e.t - ss >= -idle)) and not sd[d] then
      sd[d] = true
      incr(d, 's', 1)
    end
    if e.l then incr(d, 'l', 1) end
    if e.a then
      incr(d, 'y', 1)
      for _, c in ipairs(e.q or {}) do incr(d, 'c:' .. c, 1) end
    end
  else
    incr(d, 'b', 1)
    if e.x then incr(d, 'x', 1) end
    if e.s ~= nil then
      incr(d, 'k', 1)
      if e.h then incr(d, 'h', 1) end
    end
  end
  if not late then
    ls, lt, ld, lz, lm = score, e.t, d, e.z or 'UTC', e.m and '1' or '0'
  end
  n = n + 1
end
for _, item in ipairs(new) do
  if ls ~= nil and item[1] < ls then
    fold(item[1], cjson.decode(item[2]), true)
  else
    redis.call('ZADD', KEYS[5], num(item[1]), item[2])
    if mx == nil or item[1] > mx then mx = item[1] end
  end
end
while true do
  local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if #head == 0 then break end
  local score = tonumber(head[2])
  if score > mx - window and redis.call('ZCARD', KEYS[5]) <= maxp then break end
  redis.call('ZREM', KEYS[5], head[1])
  fold(score, cjson.decode(head[1]), false)
end
local days = {}
for d in pairs(touched) do days[#days + 1] = d end
table.sort(days)
local live = {'n', num(n), 'mx', num(mx)}
if ls ~= nil then
  for _, v in ipairs({'ls', num(ls), 'lt', num(lt), 'ld', ld, 'lz', lz, 'lm', lm, 'ss', num(ss)}) do
    live[#live + 1] = v
  end
  local open = {}
  for d in pairs(sd) do open[#open + 1] = d end
  table.sort(open)
  live[#live + 1] = 'sd'
  live[#live + 1] = table.concat(open, ',')
end
redis.call('HSET', KEYS[4], unpack(live))
for _, d in ipairs(days) do redis.call('ZADD', KEYS[6], num(now_ms), d) end
if ttl > 0 then
  local cut = now_ms - ttl * 1000
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. num(cut * 2000))
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. num(cut))
  for _, d in ipairs(days) do redis.call('EXPIRE', dayp .. d, ttl) end
  for _, k in ipairs({KEYS[1], KEYS[4], KEYS[5], KEYS[6]}) do redis.call('EXPIRE', k, ttl) end
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[3], KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6])
return #new
"""
APPEND_SHA = hashlib.sha1(APPEND.encode()).hexdigest()

# KEYS: live, pending, days, id. ARGV: day key prefix, cutoff ms ('-inf' without retention).
READ = """
local days = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[2], '+inf')
local totals = {}
for _, d in ipairs(days) do
  totals[#totals + 1] = d
  totals[#totals + 1] = redis.call('HGETALL', ARGV[1] .. d)
end
return {redis.call('HGETALL', KEYS[1]), redis.call('ZRANGE', KEYS[2], 0, -1), totals}
"""
READ_SHA = hashlib.sha1(READ.encode()).hexdigest()

# KEYS: events, id, live, pending, days, index; ARGV: day key prefix. Returns {events, days}.
ERASE = """
local events = redis.call('ZCARD', KEYS[1])
local days = 0
for _, d in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  days = days + redis.call('DEL', ARGV[1] .. d)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SREM', KEYS[6], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {events, days}
"""
ERASE_SHA = hashlib.sha1(ERASE.encode()).hexdigest()

SCRIPTS = {APPEND_SHA: APPEND, READ_SHA: READ, ERASE_SHA: ERASE}
