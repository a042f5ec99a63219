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
  local nth = 0
  if stock <= 0 then
    -- Sold out, unless the user already holds the limit (that answer comes first).
    if tonumber(redis.call('HGET', KEYS[2], user) or 0) >= limit then
      out[#out + 1] = 1
    else
      out[#out + 1] = 2
    end
  elseif limit == 1 then
    -- The common case in one call: HSETNX both checks and records the holder.
    if redis.call('HSETNX', KEYS[2], user, 1) == 1 then
      nth = 1
    else
      out[#out + 1] = 1
    end
  else
    local held = tonumber(redis.call('HGET', KEYS[2], user) or 0)
    if held >= limit then
      out[#out + 1] = 1
    else
      nth = held + 1
      redis.call('HSET', KEYS[2], user, nth)
    end
  end
  if nth > 0 then
    stock = stock - 1
    taken = taken + 1
    redis.call('ZADD', KEYS[3], now, nth .. ':' .. user)
    out[#out + 1] = 0
    out[#out + 1] = nth
    out[#out + 1] = stock
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
if taken > 0 then
  redis.call('HINCRBY', KEYS[1], 'stock', -taken)
end
return out
