-- Keep a held single-flight lock.
-- KEYS: the lock, the cached answer it guards
-- ARGV: the holder's token, ms to live, Redis time at which the lock was taken
-- Returns 1 still held (renewed) | 2 it was gone and no answer came meanwhile (taken again) |
--         0 lost (another holder, or an answer written since it was taken)
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if held then return 0 end
local w = redis.call('HGET', KEYS[2], 'w')
if w and tonumber(w) >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
