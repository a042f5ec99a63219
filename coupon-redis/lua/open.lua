-- Opens a campaign in the gate, once: opening again changes nothing (stock is never reset).
-- KEYS: meta, holds, ledger (one hash tag: one slot)
-- ARGV: total, per_user_limit, starts_at_ms, ends_at_ms, expire_at_ms
-- Returns 1 if opened now, 0 if it was already open.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'total', ARGV[1], 'limit', ARGV[2], 'start', ARGV[3], 'end', ARGV[4])
-- Sentinels create the holder hash and the ledger now, so they carry the expiry from the start
-- (user ids are never empty; the ledger sentinel sits at +inf, after every real entry).
redis.call('HSET', KEYS[2], '', 0)
redis.call('ZADD', KEYS[3], '+inf', '')
for i = 1, 3 do
  redis.call('PEXPIREAT', KEYS[i], ARGV[5])
end
return 1
