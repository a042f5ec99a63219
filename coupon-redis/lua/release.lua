-- Compensates one admission that was never acknowledged: only if its ledger entry is
-- still there (a settled, i.e. stored, coupon is never released).
-- KEYS: meta, users, ledger
-- ARGV: ledger member ("nth:user"), user
-- Returns 1 if released, 0 if there was nothing to release.
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return 0
end
local meta = redis.call('HMGET', KEYS[1], 'stock', 'total')
if meta[1] and tonumber(meta[1]) < tonumber(meta[2]) then
  redis.call('HINCRBY', KEYS[1], 'stock', 1)
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return 1
