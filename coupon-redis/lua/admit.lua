-- Admits users to one campaign, in order, atomically: per-user check, stock check,
-- decrement, record the holder and the reservation (ledger entry "nth:user" scored by time).
-- KEYS: meta, users, ledger
-- ARGV: now_ms, user_1, user_2, ...
-- Returns a flat array, three integers per user: status, nth, remaining
--   status 0 admitted, 1 already issued, 2 sold out, 3 not open, 4 closed (window over)
local n = #ARGV - 1
local out = {}
local function all(status)
  for _ = 1, n do
    out[#out + 1] = status
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
  return out
end
local meta = redis.call('HMGET', KEYS[1], 'stock', 'limit', 'start', 'end')
if not meta[1] then
  return all(3)
end
local now = tonumber(ARGV[1])
if now < tonumber(meta[3]) then
  return all(3)
end
if now >= tonumber(meta[4]) then
  return all(4)
end
local stock = tonumber(meta[1])
local limit = tonumber(meta[2])
local taken = 0
for i = 2, #ARGV do
  local user = ARGV[i]
  local held = tonumber(redis.call('HGET', KEYS[2], user) or 0)
  if held >= limit then
    out[#out + 1] = 1
    out[#out + 1] = 0
    out[#out + 1] = 0
  elseif stock <= 0 then
    out[#out + 1] = 2
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    stock = stock - 1
    taken = taken + 1
    held = held + 1
    redis.call('HSET', KEYS[2], user, held)
    redis.call('ZADD', KEYS[3], now, held .. ':' .. user)
    out[#out + 1] = 0
    out[#out + 1] = held
    out[#out + 1] = stock
  end
end
if taken > 0 then
  redis.call('HINCRBY', KEYS[1], 'stock', -taken)
end
return out
