#!/usr/bin/env bash
# Coupons/s through IssueStore::record (criterion, batches of 1/100/1000) beside the raw
# ceiling of each server measured in the same run: PostgreSQL COPY via psql, MariaDB
# LOAD DATA LOCAL INFILE via the mariadb client, of the same kind of rows into the same
# table. Needs the services of scripts/services.sh (eval "$(scripts/services.sh env)").
set -euo pipefail
cd "$(dirname "$0")/.."
: "${COUPON_TEST_POSTGRES_URL:?run: eval \"\$(scripts/services.sh env)\"}"
: "${COUPON_TEST_MYSQL_URL:?run: eval \"\$(scripts/services.sh env)\"}"
ROWS="${COUPON_BENCH_ROWS:-200000}"
# A fresh database of its own on each server, so every run starts from empty tables.
PG_ADMIN_URL="$COUPON_TEST_POSTGRES_URL"
psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS coupon_bench" -c "CREATE DATABASE coupon_bench"
COUPON_TEST_POSTGRES_URL="${PG_ADMIN_URL%/*}/coupon_bench"
MY_ADMIN_URL="$COUPON_TEST_MYSQL_URL"
COUPON_TEST_MYSQL_URL="${MY_ADMIN_URL%/*}/coupon_bench"
export COUPON_TEST_POSTGRES_URL COUPON_TEST_MYSQL_URL
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS coupon_bench; CREATE DATABASE coupon_bench" 2>/dev/null ||
  python3 - "$MY_ADMIN_URL" <<'PY' | sh
import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
print(f"mariadb -h {u.hostname} -P {u.port or 3306} -u {u.username or 'root'} -e 'DROP DATABASE IF EXISTS coupon_bench; CREATE DATABASE coupon_bench'")
PY

# The bench binary migrates both databases first (and measures record()).
cargo bench -p coupon-sql --all-features --bench record -- --noplot 2>&1 | tee "$WORK/criterion.txt" | grep -E "^record/|thrpt" || true

CAMPAIGN=$(python3 -c 'import uuid; print(uuid.uuid4())')
python3 - "$ROWS" "$CAMPAIGN" "$WORK" <<'PY'
import os, sys, time, uuid
rows, campaign, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def v7(i):  # time-ordered like the CouponId/EventId (UUID v7) that record() writes
    ms = int(time.time() * 1000) + i // 1000
    rand = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1)))
with open(f"{work}/pg.csv", "w") as pg, open(f"{work}/my.csv", "w") as my:
    for i in range(rows):
        cid, eid = v7(i), v7(i)
        pg.write(f"{cid},{campaign},raw{i},1,{eid},2026-01-01 00:00:00+00,2027-01-01 00:00:00+00\n")
        my.write(f"{cid.hex},{uuid.UUID(campaign).hex},raw{i},1,{eid.hex},2026-01-01 00:00:00,2027-01-01 00:00:00\n")
PY
now() { date +%s.%N; }

# PostgreSQL: COPY into coupon_coupons (same constraints and indexes as record()).
psql -q "$COUPON_TEST_POSTGRES_URL" -c "INSERT INTO coupon_campaigns (id, name, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, valid_days, discount, state, created_at) VALUES ('$CAMPAIGN', 'raw', 1000000000, 1, '2025-01-01', '2028-01-01', 30, '', 'open', now())"
t0=$(now)
psql -q "$COUPON_TEST_POSTGRES_URL" -c "\\copy coupon_coupons (id, campaign_id, user_id, nth, event_id, issued_at, valid_until) FROM '$WORK/pg.csv' WITH (FORMAT csv)"
t1=$(now)
pg_raw=$(python3 -c "print(round($ROWS / ($t1 - $t0)))")

# MariaDB: LOAD DATA LOCAL INFILE into coupon_coupons.
my() { python3 - "$COUPON_TEST_MYSQL_URL" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
print(f"-h {u.hostname} -P {u.port or 3306} -u {u.username or 'root'} {('-p' + u.password) if u.password else ''} {u.path.lstrip('/')}")
PY
}
MYARGS=$(my)
# shellcheck disable=SC2086
mariadb $MYARGS -e "INSERT INTO coupon_campaigns (id, name, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, valid_days, discount, state, created_at) VALUES (UNHEX(REPLACE('$CAMPAIGN','-','')), 'raw', 1000000000, 1, '2025-01-01', '2028-01-01', 30, '', 'open', NOW(6))"
t0=$(now)
# shellcheck disable=SC2086
mariadb --local-infile=1 $MYARGS -e "LOAD DATA LOCAL INFILE '$WORK/my.csv' INTO TABLE coupon_coupons FIELDS TERMINATED BY ',' (@id, @cid, user_id, nth, @eid, issued_at, valid_until) SET id = UNHEX(@id), campaign_id = UNHEX(@cid), event_id = UNHEX(@eid)"
t1=$(now)
my_raw=$(python3 -c "print(round($ROWS / ($t1 - $t0)))")

thrpt() { # criterion's middle estimate for record/<db>/<batch>, in elements/s
  grep -A3 "^record/$1/$2" "$WORK/criterion.txt" | grep thrpt | head -1 |
    sed -E 's/.*\[[^ ]+ +[^ ]+ +([0-9.]+) +([KM]?)elem\/s.*/\1 \2/' |
    awk '{ m = ($2 == "K") ? 1e3 : (($2 == "M") ? 1e6 : 1); printf "%.0f", $1 * m }'
}
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(psql --version | head -1); $(mariadb --version | grep -Eo 'Distrib [^,]+')"
printf '%-10s %12s %12s %12s %14s %8s %16s\n' database "batch 1" "batch 100" "batch 1000" "raw ceiling" "ratio" "1000 x 4 writers"
for db in postgres mariadb sqlite; do
  b1=$(thrpt $db 1); b100=$(thrpt $db 100); b1000=$(thrpt $db 1000); b4=$(thrpt $db 1000x4)
  case $db in postgres) raw=$pg_raw ;; mariadb) raw=$my_raw ;; *) raw="" ;; esac
  ratio=""
  [ -n "$raw" ] && [ -n "$b1000" ] && ratio=$(python3 -c "print(f'{$b1000 / $raw:.2f}')")
  printf '%-10s %12s %12s %12s %14s %8s %16s\n' "$db" "$b1/s" "$b100/s" "$b1000/s" "${raw:+$raw/s}" "$ratio" "$b4/s"
done
