#!/usr/bin/env bash
# The cost of the pending_notice column and its partial index on the store's insert:
# 200 batches of 1,000 coupons through the same INSERT ... SELECT FROM UNNEST(...)
# ON CONFLICT DO NOTHING that PgStore::record runs, into the migrated table: with the
# partial index and stored notices off (NULL), on (1), and with the index dropped,
# alternating, three times each. Results in BENCHMARKS.md.
# The schema is the migrated coupon_coupons of the test database (run the tests, or
# anything that migrates it, first). Needs: eval "$(scripts/services.sh env)".
set -euo pipefail
: "${COUPON_TEST_POSTGRES_URL:?run: eval \"\$(scripts/services.sh env)\"}"
U=${COUPON_TEST_POSTGRES_URL%/*}
DB=${COUPON_TEST_POSTGRES_URL##*/}
psql -q "$U/$DB" -c "DROP DATABASE IF EXISTS bench_notice" -c "CREATE DATABASE bench_notice"
pg_dump -s -t coupon_coupons "$U/$DB" | psql -q "$U/bench_notice" >/dev/null
run() {
sed "s/PENDING/$1/" <<'SQL' | psql -q -At "$U/bench_notice"
TRUNCATE coupon_coupons;
DO $$
DECLARE t0 timestamptz := clock_timestamp(); b int; c uuid := gen_random_uuid();
BEGIN
  FOR b IN 1..200 LOOP
    INSERT INTO coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until, admission_seq, pending_notice)
    SELECT u.*, PENDING::int2 FROM UNNEST(
      ARRAY(SELECT gen_random_uuid() FROM generate_series(1,1000)),
      ARRAY(SELECT c FROM generate_series(1,1000)),
      ARRAY(SELECT 'u' || (b * 1000 + i) FROM generate_series(1,1000) i),
      ARRAY(SELECT 1 FROM generate_series(1,1000)),
      ARRAY(SELECT gen_random_uuid() FROM generate_series(1,1000)),
      ARRAY(SELECT now() FROM generate_series(1,1000)),
      ARRAY(SELECT now() + interval '7 days' FROM generate_series(1,1000)),
      ARRAY(SELECT (b * 1000 + i)::int8 FROM generate_series(1,1000) i)) AS u
    ON CONFLICT DO NOTHING;
  END LOOP;
  RAISE NOTICE '%', round(200000 / extract(epoch FROM clock_timestamp() - t0));
END $$;
SQL
}
for i in 1 2 3; do
  psql -q "$U/bench_notice" -c "CREATE INDEX IF NOT EXISTS coupon_coupons_pending_notice ON coupon_coupons (id) WHERE pending_notice IS NOT NULL"
  echo "index, notices off: $(run NULL 2>&1 | sed 's/.*NOTICE: *//') rows/s"
  echo "index, notices on:  $(run 1 2>&1 | sed 's/.*NOTICE: *//') rows/s"
  psql -q "$U/bench_notice" -c "DROP INDEX coupon_coupons_pending_notice"
  echo "no index:           $(run NULL 2>&1 | sed 's/.*NOTICE: *//') rows/s"
done
psql -q "$U/$DB" -c "DROP DATABASE bench_notice"
