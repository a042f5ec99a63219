-- Compensates one admission that was never acknowledged (and is voided in the store):
-- only if exactly this admission is still in the ledger (a settled, i.e. stored, coupon,
-- or another admission of the same user and nth, is never released). Frees its own nth.
-- KEYS: meta, holds, ledger
-- ARGV: ledger member ("coupon_id:nth:user"), user, nth
-- Returns 1 if released, 0 if there was nothing to release.
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return 0
end
local meta = redis.call('HMGET', KEYS[1], 'stock', 'total')
if meta[1] and tonumber(meta[1]) < tonumber(meta[2]) then
  redis.call('HINCRBY', KEYS[1], 'stock', 1)
end
local held = redis.call('HGET', KEYS[2], ARGV[2])
if held then
  local nth = tonumber(ARGV[3])
  if string.sub(held, nth, nth) == '1' then
    held = set_nth(held, nth, '0')
  end
  if string.find(held, '1', 1, true) then
    redis.call('HSET', KEYS[2], ARGV[2], held)
  else
    redis.call('HDEL', KEYS[2], ARGV[2])
  end
end
return 1
