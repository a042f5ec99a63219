-- Makes the gate know at least what the store holds. Only ever takes stock, never
-- returns it, so it is safe while traffic flows. Creates the campaign if it is gone; then
-- whatever holdings or ledger survived the loss of `meta` are dropped first, so stock is
-- rebuilt from the store's slots alone (a surviving holding would otherwise block its
-- unit from being taken, and stock would come back near the total: F5).
-- Admission numbers continue above seq_floor (the store's highest). The last chunk of a
-- restore (`last` = 1) lifts a fence: only once every stored slot is known again.
-- KEYS: meta, holds, ledger
-- ARGV: total, per_user_limit, starts_at_ms, ends_at_ms, expire_at_ms, seq_floor, last,
--   then pairs user, nth (every stored slot)
-- Returns {created, users_restored, stock_taken, remaining, unfenced}
if redis.call('HEXISTS', KEYS[1], 'closed') == 1 then
  -- A close landed after the sync read the campaign as open (F13).
  return redis.error_reply('COUPONCLOSED the campaign is closed; a sync cannot re-create its gate')
end
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  local time = redis.call('TIME')
  if tonumber(ARGV[5]) <= tonumber(time[1]) * 1000 then
    -- Keys created now would expire at once, and half-written state would outlive them.
    return redis.error_reply('COUPONEXPIRED the campaign is past its window and expiry grace; nothing to restore')
  end
  redis.call('UNLINK', KEYS[2], KEYS[3])
  create_campaign(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
  created = 1
end
local stock = tonumber(redis.call('HGET', KEYS[1], 'stock'))
local restored, taken = 0, 0
local users = {}
for i = 8, #ARGV, 2 do
  local user = ARGV[i]
  local nth = tonumber(ARGV[i + 1])
  local held = redis.call('HGET', KEYS[2], user) or ''
  if string.sub(held, nth, nth) ~= '1' then
    redis.call('HSET', KEYS[2], user, set_nth(held, nth, '1'))
    if not users[user] then
      users[user] = true
      restored = restored + 1
    end
    if stock > 0 then
      stock = stock - 1
      taken = taken + 1
    end
  end
end
redis.call('HSET', KEYS[1], 'stock', stock)
if tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') < tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[6])
end
local unfenced = 0
if ARGV[7] == '1' then
  unfenced = redis.call('HDEL', KEYS[1], 'fenced')
end
return {created, restored, taken, stock, unfenced}
