-- Opens a campaign in the gate, once: opening again changes nothing (stock is never reset).
-- KEYS: meta, holds, ledger (one hash tag: one slot)
-- ARGV: total, per_user_limit, starts_at_ms, ends_at_ms, expire_at_ms
-- Returns 1 if opened now, 0 if it was already open.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
create_campaign(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
