-- Shared by the scripts that open a campaign or change holdings (scripts.rs puts it in
-- front of them). KEYS are always meta, holds, ledger: one hash tag, one slot.

-- A user's holding is a string with one character per nth, '1' held and '0' free.
local function held_count(held)
  if not held then
    return 0
  end
  local _, ones = string.gsub(held, '1', '')
  return ones
end

-- `held` with its nth character set to `mark`, padded with free ('0') places first.
local function set_nth(held, nth, mark)
  if #held < nth then
    held = held .. string.rep('0', nth - #held)
  end
  return string.sub(held, 1, nth - 1) .. mark .. string.sub(held, nth + 1)
end

-- Creates a campaign's three keys, all expiring at `expire_at_ms`. Sentinels create the
-- holder hash and the ledger now, so they carry the expiry from the start (user ids are
-- never empty; the ledger sentinel sits at +inf, after every real entry).
local function create_campaign(total, limit, starts_at_ms, ends_at_ms, expire_at_ms)
  redis.call('HSET', KEYS[1], 'stock', total, 'total', total, 'limit', limit, 'start', starts_at_ms, 'end', ends_at_ms)
  redis.call('HSET', KEYS[2], '', 0)
  redis.call('ZADD', KEYS[3], '+inf', '')
  for i = 1, 3 do
    redis.call('PEXPIREAT', KEYS[i], expire_at_ms)
  end
end

