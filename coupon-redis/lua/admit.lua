-- Admits users to one campaign, in order, atomically: per-user check, stock check,
-- decrement, record the holding and the reservation.
-- KEYS: meta, holds, ledger
-- ARGV: now_ms (the caller's time, checked against the window), then pairs coupon_id, user
-- A user's holding is a string with one character per nth, '1' held and '0' free; an
-- admission takes the lowest free nth. The ledger member is "coupon_id:nth:user" (the
-- admission's own identity), scored with this server's clock in microseconds.
-- Each admission takes the campaign's next number (meta field `seq`), carried in its event:
-- the store refuses a number twice, which is how a gate gone back in time is found.
-- Returns a flat array, five integers per admission: status, nth, remaining, seq, and the
-- time the ledger holds (this server's TIME in microseconds; 0 unless admitted)
--   status 0 admitted, 1 already issued, 2 sold out, 3 not open, 4 closed (window over),
--   5 fenced (the campaign waits for a sync: meta field `fenced`); a campaign closed in
--   the gate (meta field `closed`, close.lua) answers 4 as well
local n = (#ARGV - 1) / 2
local out = {}
local function all(status)
  for _ = 1, n do
    out[#out + 1] = status
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
  return out
end
local meta = redis.call('HMGET', KEYS[1], 'stock', 'limit', 'start', 'end', 'seq', 'fenced', 'closed')
if meta[7] then
  return all(4)
end
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
if meta[6] then
  return all(5)
end
local stock = tonumber(meta[1])
local seq = tonumber(meta[5] or '0')
local limit = tonumber(meta[2])
local time = redis.call('TIME')
local at = tonumber(time[1]) * 1000000 + tonumber(time[2])
local taken = 0
for i = 2, #ARGV, 2 do
  local coupon, user = ARGV[i], ARGV[i + 1]
  local nth = 0
  if stock <= 0 then
    -- Sold out, unless the user already holds the limit (that answer comes first).
    if held_count(redis.call('HGET', KEYS[2], user)) >= limit then
      out[#out + 1] = 1
    else
      out[#out + 1] = 2
    end
  elseif limit == 1 then
    -- The common case in one call: HSETNX both checks and records the holding.
    if redis.call('HSETNX', KEYS[2], user, '1') == 1 then
      nth = 1
    else
      out[#out + 1] = 1
    end
  else
    local held = redis.call('HGET', KEYS[2], user) or ''
    if held_count(held) >= limit then
      out[#out + 1] = 1
    else
      -- The lowest free nth, or one past the end.
      nth = string.find(held, '0', 1, true) or #held + 1
      redis.call('HSET', KEYS[2], user, set_nth(held, nth, '1'))
    end
  end
  if nth > 0 then
    stock = stock - 1
    taken = taken + 1
    seq = seq + 1
    redis.call('ZADD', KEYS[3], at, coupon .. ':' .. nth .. ':' .. user)
    out[#out + 1] = 0
    out[#out + 1] = nth
    out[#out + 1] = stock
    out[#out + 1] = seq
    out[#out + 1] = at
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
if taken > 0 then
  -- One write for both: the script runs alone, so stock and seq are exact here.
  redis.call('HSET', KEYS[1], 'stock', stock, 'seq', seq)
end
return out
