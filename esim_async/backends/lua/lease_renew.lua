-- Extend a monitor's lease if the caller still holds it.
-- KEYS: the lease; ARGV: the caller's token, ms to live
-- Returns 1 renewed | 0 lost (it lapsed, or another holds it)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
