-- Store a cached answer, keeping its fetch time ('f') and write time ('w') on Redis' clock.
-- KEYS: the cached answer
-- ARGV: the encoded entry, its age when written (seconds, on the writer's clock from its own
--       fetch time), ms to live
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local fetched = now - tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'f', tostring(fetched), 'w', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
