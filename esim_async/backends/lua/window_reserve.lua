-- Reserve one send in a limiter's windows on the server's clock: in the shared window and in
-- one key's, both or neither. A reservation counts in every window until it is settled
-- (window_settle.lua); one older than the pending bound counts as sent at that bound.
-- KEYS: state hash, shared sent, shared pending, key sent, key pending
-- ARGV: version, armed (the caller saw this state lately, so a missing one was lost),
--       not before, member, pending bound (s), state ttl (ms),
--       count, span, spacing (shared window; count 0: none), key count, key span (0: none),
--       the state's epoch the caller last saw ('' if none), spans sends are kept back
-- Returns {now, 0, epoch} reserved | {now, 1 or 2, wait, epoch} full (2: the key's window) |
--         {now, 3 or 4, '', state, epoch} the state is not at that version (4: it was lost)
-- The epoch is the server's time when the state was created: an armed caller that finds
-- another one than it saw knows the state was lost and created anew by a caller that could not
-- tell (a newcomer), and holds everyone unless a hold for that loss is already in place.
local KEEP = tonumber(ARGV[13])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)
local version = tonumber(ARGV[1])
local count, span, spacing = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local kcount, kspan = tonumber(ARGV[10]), tonumber(ARGV[11])
local bound = tonumber(ARGV[5])

local armed, seen = ARGV[2] == '1', ARGV[12] or ''
local state = redis.call('HMGET', KEYS[1], 'version', 'epoch', 'held')
local v, epoch = state[1], state[2]
local lost = 0
-- lost (a restart): hold every caller for one period of the windows asked about
local function quarantine()
  lost, v = 1, math.floor(now * 1000)
  local hold = span
  if count == 0 then hold = kspan end
  local hold_until = now + hold
  local current = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '')
  if current and current > hold_until then hold_until = current end
  redis.call('HSET', KEYS[1], 'version', v, 'cooldown_until',
    string.format('%.6f', hold_until), 'held', '1')
end
if v then
  v = tonumber(v)
  if not epoch then  -- written by a compare-and-set after a loss (or by an older release)
    epoch = stamp
    redis.call('HSET', KEYS[1], 'epoch', epoch)
  end
  if armed and seen ~= '' and epoch ~= seen and not state[3] then quarantine() end
else
  epoch = stamp
  if armed then
    quarantine()
  else
    v = version
    redis.call('HSET', KEYS[1], 'version', v)
  end
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if v ~= version then
  return {stamp, 3 + lost, '', redis.call('HGETALL', KEYS[1]), epoch}
end

-- The first time one more send fits: sends at or before now - width have left the window.
local function edge(sent, pending, n, width)
  local old = redis.call('ZRANGEBYSCORE', pending, '-inf', now - bound, 'WITHSCORES')
  for i = 1, #old, 2 do
    redis.call('ZREM', pending, old[i])
    redis.call('ZADD', sent, tonumber(old[i + 1]) + bound, old[i])
    redis.call('PEXPIRE', sent, math.ceil(KEEP * width * 1000) + 1000)
  end
  redis.call('ZREMRANGEBYSCORE', sent, '-inf', now - KEEP * width)
  local s = redis.call('ZCOUNT', sent, '(' .. string.format('%.6f', now - width), '+inf')
  local need = s + redis.call('ZCARD', pending) + 1 - n
  if need <= 0 then return now end
  if need > s then -- full of reservations: ask again soon (one may be given back)
    return now + math.min(width, math.max(0.01, width / 100))
  end
  local first = redis.call('ZRANGEBYSCORE', sent, '(' .. string.format('%.6f', now - width),
    '+inf', 'WITHSCORES', 'LIMIT', need - 1, 1)
  return tonumber(first[2]) + width
end

local at = tonumber(ARGV[3])
if at < now then at = now end
local status = 1
if count > 0 then
  local e = edge(KEYS[2], KEYS[3], count, span)
  if spacing > 0 then
    local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
    if last + spacing > e then e = last + spacing end
  end
  if e > at then at = e end
end
if kcount > 0 then
  local e = edge(KEYS[4], KEYS[5], kcount, kspan)
  if e > at then at, status = e, 2 end
end
if at > now then
  return {stamp, status, string.format('%.6f', at - now), epoch}
end

local function hold(sent, pending, width)
  local ms = math.ceil((KEEP * width + bound) * 1000) + 1000
  redis.call('ZADD', pending, now, ARGV[4])
  redis.call('PEXPIRE', pending, ms)
  redis.call('PEXPIRE', sent, ms)
end
if count > 0 then
  hold(KEYS[2], KEYS[3], span)
  redis.call('HSET', KEYS[1], 'last', stamp)
end
if kcount > 0 then hold(KEYS[4], KEYS[5], kspan) end
return {stamp, 0, epoch}
