#!/usr/bin/env bash
# Admissions/s through RedisGate (criterion) beside redis-benchmark driving the same
# admit.lua by EVALSHA with 50 clients, unpipelined and with -P 16, in the same run.
# Usage: coupon-redis/bench.sh [redis-host] [redis-port]
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${1:-127.0.0.1}"
PORT="${2:-6379}"
N="${COUPON_BENCH_REQUESTS:-300000}"
cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }

SHA=$(cli SCRIPT LOAD "$(cat coupon-redis/lua/admit.lua)")
now_ms=$(($(date +%s%N) / 1000000))

rate() { # a fresh campaign per run, so every measurement starts from the same state
  local tag="rb-$$-$RANDOM"
  cli EVAL "$(cat coupon-redis/lua/open.lua)" 3 "cpn:{$tag}:meta" "cpn:{$tag}:holds" "cpn:{$tag}:ledger" \
    1000000000 1 0 $((now_ms + 6 * 3600 * 1000)) $((now_ms + 7 * 3600 * 1000)) >/dev/null
  # redis-benchmark prints "throughput summary: N requests per second"
  redis-benchmark -h "$HOST" -p "$PORT" -n "$N" -c 50 -r 100000000 "$@" \
    EVALSHA "$SHA" 3 "cpn:{$tag}:meta" "cpn:{$tag}:holds" "cpn:{$tag}:ledger" "$now_ms" "c__rand_int__" "u:__rand_int__" 2>/dev/null |
    grep -Eo 'throughput summary: [0-9.]+' | grep -Eo '[0-9.]+$'
  cli UNLINK "cpn:{$tag}:meta" "cpn:{$tag}:holds" "cpn:{$tag}:ledger" >/dev/null
}
plain=$(rate)
piped=$(rate -P 16)

COUPON_TEST_REDIS_URL="redis://$HOST:$PORT/" cargo bench -p coupon-redis --bench gate -- --noplot 2>&1 | tee /tmp/coupon-redis-bench.txt |
  grep -E "^redis_gate|thrpt" || true
thrpt() { # criterion's middle estimate, in elements/s
  grep -A3 "^redis_gate/$1" /tmp/coupon-redis-bench.txt | grep thrpt | head -1 |
    sed -E 's/.*\[[^ ]+ [^ ]+ ([0-9.]+) ([KM]?)elem\/s.*/\1 \2/' |
    awk '{ m = ($2 == "K") ? 1e3 : (($2 == "M") ? 1e6 : 1); printf "%.0f", $1 * m }'
}
unbatched=$(thrpt admit_unbatched)
batched=$(thrpt admit_batched)
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(redis-server --version | cut -d' ' -f3)"
printf 'redis-benchmark EVALSHA -c 50        : %10.0f/s\n' "$plain"
printf 'redis-benchmark EVALSHA -c 50 -P 16  : %10.0f/s\n' "$piped"
printf 'RedisGate unbatched (50 tasks)       : %10.0f/s  = %.2f x unpipelined\n' "$unbatched" "$(echo "$unbatched / $plain" | bc -l)"
printf 'RedisGate batched   (50 tasks)       : %10.0f/s  = %.2f x -P 16\n' "$batched" "$(echo "$batched / $piped" | bc -l)"
