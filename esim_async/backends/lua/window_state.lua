-- A limiter's state: read it with the sends and reservations in its shared window, or
-- replace it if it is still at the version the caller read (compare-and-set).
-- KEYS: state hash, shared sent, shared pending
-- ARGV: 'load', span (0: no shared window) | expected version, state ttl (ms), field, value...
-- Returns {now, held, state} | {1} replaced | {0, state} not at that version
if ARGV[1] == 'load' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local span = tonumber(ARGV[2])
  local held = 0
  if span > 0 then
    local edge = '(' .. string.format('%.6f', now - span)
    held = redis.call('ZCOUNT', KEYS[2], edge, '+inf') + redis.call('ZCARD', KEYS[3])
  end
  return {string.format('%.6f', now), held, redis.call('HGETALL', KEYS[1])}
end
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1}
