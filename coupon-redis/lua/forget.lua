-- Forgets a campaign as a loss of the gate's data would (stock, holders, ledger,
-- numbering): admissions answer "not open" until a restore rebuilds it from the
-- store. A closed campaign keeps its mark (close.lua): it stays closed.
-- KEYS: meta, holds, ledger
redis.call('UNLINK', KEYS[2], KEYS[3])
if redis.call('HEXISTS', KEYS[1], 'closed') == 0 then
  redis.call('UNLINK', KEYS[1])
end
return 1
