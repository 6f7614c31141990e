-- Read a cached answer.
-- KEYS: the cached answer
-- Returns {encoded entry, its age on Redis' clock} | nil (missing)
local e = redis.call('HMGET', KEYS[1], 'v', 'f')
if not e[1] or not e[2] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return {e[1], tostring(math.max(0, now - tonumber(e[2])))}
