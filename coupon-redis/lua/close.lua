-- Closes a campaign in the gate for good: from now on admissions answer "closed"
-- (status 4) on every server, whatever its cache still says, and a restore (a sync
-- that read the campaign as open just before) cannot re-create its gate. The holders
-- and the ledger are freed (UNLINK: freed off the main thread); `meta` stays, marked,
-- until its own expiry, or for ARGV[1] ms as a tombstone when the gate did not hold it.
-- KEYS: meta, holds, ledger
-- ARGV: tombstone_ttl_ms
redis.call('UNLINK', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'closed', 1)
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
