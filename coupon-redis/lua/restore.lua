-- Makes the gate know at least what the store holds. Only ever takes stock, never
-- returns it, so it is safe while traffic flows. Creates the campaign if it is gone.
-- KEYS: meta, users, ledger
-- ARGV: total, per_user_limit, starts_at_ms, ends_at_ms, expire_at_ms, then pairs user, highest_nth
-- Returns {created, users_restored, stock_taken, remaining}
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'total', ARGV[1], 'limit', ARGV[2], 'start', ARGV[3], 'end', ARGV[4])
  redis.call('HSET', KEYS[2], '', 0)
  redis.call('ZADD', KEYS[3], '+inf', '')
  for i = 1, 3 do
    redis.call('PEXPIREAT', KEYS[i], ARGV[5])
  end
  created = 1
end
local stock = tonumber(redis.call('HGET', KEYS[1], 'stock'))
local restored, taken = 0, 0
for i = 6, #ARGV, 2 do
  local user = ARGV[i]
  local nth = tonumber(ARGV[i + 1])
  local held = tonumber(redis.call('HGET', KEYS[2], user) or 0)
  if nth > held then
    redis.call('HSET', KEYS[2], user, nth)
    restored = restored + 1
    taken = taken + (nth - held)
    stock = math.max(0, stock - (nth - held))
  end
end
redis.call('HSET', KEYS[1], 'stock', stock)
return {created, restored, taken, stock}
