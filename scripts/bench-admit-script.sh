#!/usr/bin/env bash
# The gate's admit.lua alone, several commits alternating (this machine's run-to-run noise
# is larger than the differences measured): redis-benchmark EVALSHA, one admission per
# call, a fresh campaign per run.
#
#   scripts/bench-admit-script.sh [ROUNDS] COMMIT...     e.g. 6 2f412b2 597c903 HEAD
#
# REDIS_URL (default redis://127.0.0.1:6379) picks the server; keys are removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
if [[ ${1:-} =~ ^[0-9]+$ ]]; then rounds=$1; shift; fi
(($# > 0)) || { echo "usage: $0 [ROUNDS] COMMIT..." >&2; exit 2; }
url=${REDIS_URL:-redis://127.0.0.1:6379}
host=$(sed -E 's#redis://([^:/]+):([0-9]+).*#\1#' <<<"$url")
port=$(sed -E 's#redis://([^:/]+):([0-9]+).*#\2#' <<<"$url")
cli() { redis-cli -h "$host" -p "$port" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for c in "$@"; do
  mkdir -p "$work/$c"
  # Since 30ad26b the scripts share lua/prelude.lua, sent in front of each (as scripts.rs does).
  git show "$c:coupon-redis/lua/prelude.lua" >"$work/$c/prelude.lua" 2>/dev/null || : >"$work/$c/prelude.lua"
  cat "$work/$c/prelude.lua" <(git show "$c:coupon-redis/lua/admit.lua") >"$work/$c/admit.lua"
  cat "$work/$c/prelude.lua" <(git show "$c:coupon-redis/lua/open.lua") >"$work/$c/open.lua"
done
declare -A sum
for round in $(seq "$rounds"); do
  for c in "$@"; do
    sha=$(cli SCRIPT LOAD "$(cat "$work/$c/admit.lua")")
    now_ms=$(($(date +%s%N) / 1000000))
    tag="bench-admit-$RANDOM$RANDOM"
    keys=("cpn:{$tag}:meta" "cpn:{$tag}:holds" "cpn:{$tag}:ledger")
    cli EVAL "$(cat "$work/$c/open.lua")" 3 "${keys[@]}" 1000000000 1 $((now_ms - 1000)) \
      $((now_ms + 3600000)) $((now_ms + 7200000)) | grep -qx 1 || { echo "open.lua of $c did not open the campaign" >&2; exit 1; }
    # Before protocol v2 the script took users only; since, pairs of coupon id and user.
    if grep -q 'ARGV: now_ms, user_1' "$work/$c/admit.lua"; then
      args=("$now_ms" "u:__rand_int__")
    else
      args=("$now_ms" "c__rand_int__" "u:__rand_int__")
    fi
    rate=$(redis-benchmark -h "$host" -p "$port" -n 300000 -c 50 -r 100000000 EVALSHA "$sha" 3 "${keys[@]}" \
      "${args[@]}" 2>/dev/null | grep -Eo 'throughput summary: [0-9.]+' | grep -Eo '[0-9.]+$')
    cli UNLINK "${keys[@]}" >/dev/null
    sum[$c]=$(python3 -c "print(${sum[$c]:-0} + $rate)")
    printf 'round %d  %-10s %10.0f req/s\n' "$round" "$c" "$rate"
  done
done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "$@"; do
  printf 'mean      %-10s %10.0f req/s\n' "$c" "$(python3 -c "print(${sum[$c]} / $rounds)")"
done
