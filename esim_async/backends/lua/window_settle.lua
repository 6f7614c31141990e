-- Settle a reservation in each of its windows: confirmed (stamped with the server's time as
-- the confirmation arrives, later than the send) or released (forgotten).
-- KEYS: sent, pending of each window; ARGV: member, '1' confirm | '0' release, ttl (ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS, 2 do
  redis.call('ZREM', KEYS[i + 1], ARGV[1])
  if ARGV[2] == '1' then
    redis.call('ZADD', KEYS[i], now, ARGV[1])
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  else
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
end
return 1
