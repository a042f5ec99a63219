-- Fences a campaign: admissions answer "fenced" until a restore lifts it (restore.lua).
-- The store proved the gate went back in time; releases, settles and the ledger keep
-- working so the reconciler can finish what was admitted. A campaign the gate does not
-- hold stays unknown (no meta is created here: it would look like an open campaign).
-- KEYS: meta
-- Returns 1 if the campaign is held (and now fenced), 0 if not.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'fenced', 1)
return 1
