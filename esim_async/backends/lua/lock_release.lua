-- Delete a lock (or a shared token) if it holds any of the caller's tokens.
-- KEYS: the lock; ARGV: the caller's tokens
-- Returns 1 deleted | 0 not the caller's (or gone)
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
for i = 1, #ARGV do
  if held == ARGV[i] then return redis.call('DEL', KEYS[1]) end
end
return 0
