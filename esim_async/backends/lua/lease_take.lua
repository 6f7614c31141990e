-- Take a monitor's lease: when nobody holds it, or when the caller already does (an earlier
-- take or renewal of the caller ran on the server but its reply was lost).
-- KEYS: the lease; ARGV: the caller's token, ms to live
-- Returns 1 held by the caller (for ms to live from now) | 0 held by another
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
