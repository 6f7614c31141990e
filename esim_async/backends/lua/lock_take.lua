-- Take an item's single-flight lock with a fresh token, and read the item's cached answer in the
-- same round trip.
-- KEYS: the lock, the cached answer (one hash tag)
-- ARGV: ms to live, this attempt's token, then the tokens of the caller's earlier attempts whose
--       fate is unknown (they timed out and may have run after all: such a lock is the caller's)
-- Returns {token held or '', Redis time, encoded answer or '', its age on Redis' clock or ''}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('GET', KEYS[1])
local mine = ''
if not held then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
  mine = ARGV[2]
else
  for i = 3, #ARGV do
    if held == ARGV[i] then
      redis.call('PEXPIRE', KEYS[1], ARGV[1])
      mine = held
      break
    end
  end
end
if mine == '' then return {'', tostring(now), '', ''} end
local e = redis.call('HMGET', KEYS[2], 'v', 'f')
if not e[1] or not e[2] then return {mine, tostring(now), '', ''} end
return {mine, tostring(now), e[1], tostring(math.max(0, now - tonumber(e[2])))}
