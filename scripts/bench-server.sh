#!/usr/bin/env bash
# Reproduces BENCHMARKS.md's side-by-side table in one go, on the same services: the
# distributed setup (coupon-server + 2 coupon-consumer over the Redis Cluster gate,
# Kafka (tansu) and PostgreSQL) in each acknowledgement mode; the naive design (an axum
# handler doing one EVALSHA of the same admit.lua, coupon-server's example
# naive_evalsha); and the broker's floor (coupon-kafka's bare_producer with KafkaLog's
# settings). Each runs the seed's k6 scenario (2,800 requests/s for 60 s, at most 3,000
# in flight, 100,000 coupons), constant-rate steps (the highest with p99 < 10 ms) and a
# closed loop, whose server CPU per issued coupon is measured. Beside them, in the same
# run, the ceilings: wrk against the server's /healthz (with its CPU per request) and
# redis-benchmark driving admit.lua on the node that serves the campaign.
#
# The naive design runs first and after-log last, so the broker after-log meets has been
# busy for the whole run (the after-gate and after-store stacks publish too). The broker's
# floor is taken four ways: at the seed's rate with the stack stopped; at the seed's rate
# in a process of its own beside the naive design's seed (the machine as loaded, the
# server publishing nothing) and beside after-gate's seed (the server publishing the same
# rate: two producers under the same conditions); and at 200/s beside after-log's seed.
#
#   scripts/bench-server.sh                     # everything (~18 minutes)
#   COUPON_BENCH_MODES=after-log scripts/bench-server.sh
#   COUPON_BENCH_GATE=standalone scripts/bench-server.sh   # the standalone Redis gate
#   COUPON_BENCH_MODES="after-log after-log:campaign" COUPON_BENCH_STEPS= scripts/bench-server.sh
#       # a mode's ":campaign" suffix keys its events by campaign (COUPON_KAFKA_PARTITION_KEY)
#
# Results: one JSON per run in $COUPON_BENCH_OUT (default /tmp/coupon-bench), progress
# lines, and at the end the table as Markdown (also $COUPON_BENCH_OUT/table.md).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${COUPON_BENCH_OUT:-/tmp/coupon-bench}"
MODES="${COUPON_BENCH_MODES:-naive after-gate after-store after-log}"
STEPS="${COUPON_BENCH_STEPS-1000 2000 3000 4000 5000 6000 8000 10000}" # empty: no steps
STEP_DURATION="${COUPON_BENCH_STEP_DURATION:-10s}"
SEED_DURATION="${COUPON_BENCH_SEED_DURATION:-60s}"
SEED="${COUPON_BENCH_SEED:-1}" # 0 skips the seed scenario
GATE="${COUPON_BENCH_GATE:-cluster}"
PORT="${COUPON_BENCH_PORT:-18080}"
SECRET=bench-secret
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/table.md
STARTED=$SECONDS

scripts/services.sh up
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package) for the /healthz ceiling" >&2
  SUDO=""; [[ ${EUID} -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
eval "$(scripts/services.sh env)"
case $GATE in
  cluster) REDIS_URL="${COUPON_BENCH_REDIS_URL:-$COUPON_TEST_REDIS_CLUSTER_URLS}" ;;
  standalone) REDIS_URL="${COUPON_BENCH_REDIS_URL:-$COUPON_TEST_REDIS_URL}" ;;
  *) echo "COUPON_BENCH_GATE must be cluster or standalone, not $GATE" >&2; exit 2 ;;
esac
DATABASE_URL="${COUPON_BENCH_DATABASE_URL:-$COUPON_TEST_POSTGRES_URL}"
cargo build --release -p coupon-server -p coupon-consumer -p coupon-loadgen
cargo build --release -p coupon-server --example naive_evalsha
cargo build --release -p coupon-kafka --example bare_producer
BIN=target/release
PIDS=()

start_stack() { # $1 = an ack mode (with :campaign, events keyed by campaign), or naive
  local topic="bench-${1%%:*}-$RANDOM$RANDOM" key=user
  [[ $1 != *:campaign ]] || key=campaign
  export COUPON_KAFKA_PARTITION_KEY=$key COUPON_JWT_SECRET=$SECRET COUPON_REDIS_URL=$REDIS_URL COUPON_KAFKA_BROKERS=$COUPON_TEST_KAFKA_BROKERS \
    COUPON_KAFKA_TOPIC=$topic COUPON_KAFKA_SINGLE_BROKER=true COUPON_CONSUMER_GROUP="$topic-recorder" COUPON_DATABASE_URL=$DATABASE_URL \
    COUPON_USER_RATE_LIMIT=0 COUPON_RATE_LIMIT=0 COUPON_LISTEN=127.0.0.1:$PORT COUPON_ACK=${1%%:*} RUST_LOG=warn
  if [[ $1 == naive ]]; then
    "$BIN/examples/naive_evalsha" --listen "127.0.0.1:$PORT" >"$OUT/server-$1.log" 2>&1 &
    PIDS=($!)
  else
    "$BIN/coupon-server" >"$OUT/server-$1.log" 2>&1 &
    PIDS=($!)
    for i in 1 2; do
      "$BIN/coupon-consumer" >"$OUT/consumer-$1-$i.log" 2>&1 &
      PIDS+=($!)
    done
  fi
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "server not ready; see $OUT/server-$1.log" >&2; exit 1; }
  # Warm-up, not measured: the topic's first writes and the consumers joining their
  # group (a rebalance) stall the first seconds of a fresh stack.
  loadgen --mode rate --rate 500 --duration 5s --stock 1000000 --wait-stored 60s >"$OUT/warmup-$1.log" || true
}

stop_stack() {
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}
trap stop_stack EXIT

# CPU-seconds (user + sys) of every process of the stack, by name: `cpu_snapshot > file`.
cpu_snapshot() {
  for pid in $(pgrep -f 'coupon-server|coupon-consumer|coupon-loadgen|naive_evalsha|redis-server|tansu|postgres'); do
    [[ -r /proc/$pid/stat ]] && awk -v pid="$pid" '{print pid, $2, $14 + $15}' "/proc/$pid/stat" 2>/dev/null
  done | sort
}
# The CPU used between two snapshots, per program: "name=seconds ...".
cpu_between() {
  join "$1" "$2" | awk -v hz="$(getconf CLK_TCK)" '{
      n = $2; gsub(/[()]/, "", n); sub(/-server$/, "", n); if (n ~ /^postgres/) n = "postgres"
      used[n] += ($5 - $3) / hz
    } END { for (n in used) printf "%s=%.2f ", n, used[n] }'
}
# The server process's own CPU-seconds so far.
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/${PIDS[0]}/stat"; }

loadgen() { "$BIN/coupon-loadgen" --url "http://127.0.0.1:$PORT" --secret "$SECRET" --json --quiet "$@"; }
# The broker's floor at a rate: `floor RATE SECONDS > file.json` (its own fresh topic of
# 6 partitions, as the server's; 2 s of warm-up at the same rate).
floor() { "$BIN/examples/bare_producer" --brokers "$COUPON_TEST_KAFKA_BROKERS" --rate "$1" --seconds "$2" --json; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))" "$@"; }
secs() { python3 -c "import re,sys; m=re.fullmatch(r'(\d+)s', sys.argv[1]); print(m.group(1) if m else 10)" "$1"; }

# The ceilings, measured in this run. /healthz of the reference server, with the server's
# CPU per request: what any request costs before it does anything.
start_stack after-gate
before=$(server_cpu)
wrk -t2 -c256 -d10s "http://127.0.0.1:$PORT/healthz" >"$OUT/wrk-healthz.txt"
after=$(server_cpu)
stop_stack
WRK=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-healthz.txt")
WRK_REQUESTS=$(awk '/requests in/ {print $1}' "$OUT/wrk-healthz.txt")
# admit.lua alone, by EVALSHA, on the node that would serve the campaign: one campaign
# lives in one hash slot, so one node serves it whatever the cluster's size.
tag="bench-$RANDOM"
RB_HOST="" RB_PORT=""
for url in ${REDIS_URL//,/ }; do
  h=$(sed -E 's#redis://([^:/]+):([0-9]+).*#\1#' <<<"$url")
  p=$(sed -E 's#redis://([^:/]+):([0-9]+).*#\2#' <<<"$url")
  if ! redis-cli -h "$h" -p "$p" EXISTS "cpn:{$tag}:meta" | grep -q MOVED; then RB_HOST=$h RB_PORT=$p; break; fi
done
SHA=$(redis-cli -h "$RB_HOST" -p "$RB_PORT" SCRIPT LOAD "$(cat coupon-redis/lua/prelude.lua coupon-redis/lua/admit.lua)")
now_ms=$(($(date +%s%N) / 1000000))
redis-cli -h "$RB_HOST" -p "$RB_PORT" EVAL "$(cat coupon-redis/lua/prelude.lua coupon-redis/lua/open.lua)" 3 "cpn:{$tag}:meta" \
  "cpn:{$tag}:holds" "cpn:{$tag}:ledger" 1000000000 1 0 $((now_ms + 6 * 3600 * 1000)) $((now_ms + 7 * 3600 * 1000)) | grep -qx 1 ||
  { echo "open.lua did not open the benchmark's campaign on $RB_HOST:$RB_PORT" >&2; exit 1; }
REDIS_RATE=$(redis-benchmark -h "$RB_HOST" -p "$RB_PORT" -n 300000 -c 50 -r 100000000 EVALSHA "$SHA" 3 "cpn:{$tag}:meta" \
  "cpn:{$tag}:holds" "cpn:{$tag}:ledger" "$now_ms" "c__rand_int__" "u:__rand_int__" 2>/dev/null |
  grep -Eo 'throughput summary: [0-9.]+' | grep -Eo '[0-9.]+$')
redis-cli -h "$RB_HOST" -p "$RB_PORT" UNLINK "cpn:{$tag}:meta" "cpn:{$tag}:holds" "cpn:{$tag}:ledger" >/dev/null
python3 -c "import json,sys; json.dump(dict(wrk=float(sys.argv[1]), healthz_cpu_s=float(sys.argv[3]) - float(sys.argv[2]),
  healthz_requests=int(sys.argv[4]), redis=float(sys.argv[5]), redis_node=sys.argv[6], gate=sys.argv[7]), open(sys.argv[8], 'w'))" \
  "$WRK" "$before" "$after" "$WRK_REQUESTS" "$REDIS_RATE" "$RB_HOST:$RB_PORT" "$GATE" "$OUT/ceilings.json"

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; everything (load generator included) on these cores; gate: $GATE"
printf 'ceiling  wrk /healthz (-t2 -c256 10s)            %10.0f req/s, server CPU %.1f us/request\n' "$WRK" \
  "$(field "$OUT/ceilings.json" "healthz_cpu_s * 1e6 / healthz_requests")"
printf 'ceiling  redis-benchmark EVALSHA admit.lua -c 50 %10.0f req/s (node %s)\n' "$REDIS_RATE" "$RB_HOST:$RB_PORT"

if [[ $SEED != 0 ]]; then
  floor 2800 "$(secs "$SEED_DURATION")" >"$OUT/floor-2800.json"
  printf 'floor    bare producer 2800/s: p50=%.2fms p95=%.2fms p99=%.2fms errors=%s\n' \
    "$(field "$OUT/floor-2800.json" "latency_ms['p50']")" "$(field "$OUT/floor-2800.json" "latency_ms['p95']")" \
    "$(field "$OUT/floor-2800.json" "latency_ms['p99']")" "$(field "$OUT/floor-2800.json" errors)"
fi

for mode in $MODES; do
  start_stack "$mode"
  if [[ $SEED != 0 ]]; then
    # With after-log, the broker's floor is also taken *under* the seed's load: a bare
    # producer at 200/s beside the server, on the same broker and cores. The seed's
    # latency minus this floor is the issuer's own share.
    floor_pid=""
    if [[ ${mode%%:*} == after-log ]]; then
      floor 200 "$(secs "$SEED_DURATION")" >"$OUT/floor-under-load-$mode.json" &
      floor_pid=$!
    elif [[ $mode == naive || $mode == after-gate ]]; then
      # A bare producer at the seed's own rate, in a process of its own, beside the seed:
      # - beside the naive design, the machine is as loaded as by a seed and nothing
      #   else publishes;
      # - beside after-gate, the server publishes the same rate in the background on the
      #   same broker and cores: its publish histogram and this producer's delivery
      #   reports are two producers under the same conditions, so any difference is what
      #   the issuer adds to the broker's latency.
      floor 2800 "$(secs "$SEED_DURATION")" >"$OUT/floor-beside-$mode.json" &
      floor_pid=$!
    fi
    # The server's own histograms before and after: where the seed's time went inside it.
    curl -fs "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-before-$mode.txt" 2>/dev/null || true
    loadgen --mode rate --rate 2800 --duration "$SEED_DURATION" --max-in-flight 3000 --stock 100000 --wait-stored 120s \
      >"$OUT/seed-$mode.json" || true
    [[ -z $floor_pid ]] || wait "$floor_pid"
    if curl -fs "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-after-$mode.txt" 2>/dev/null; then
      python3 scripts/bench-breakdown.py "$OUT/metrics-before-$mode.txt" "$OUT/metrics-after-$mode.txt" \
        >"$OUT/breakdown-$mode.json"
      python3 - "$mode" "$OUT/breakdown-$mode.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
parts = [f"{k} p50/p95/p99 = {v['p50']:.2f}/{v['p95']:.2f}/{v['p99']:.2f} ms (n={v['count']})" for k, v in d.items() if v]
print(f"{sys.argv[1]:<11} inside the server: " + "; ".join(parts))
PY
    fi
    printf '%-11s seed 2800/s %s: requests=%s issued=%s sold_out=%s errors=%s avg=%.2fms p95=%.2fms p99=%.2fms consistency=%s\n' \
      "$mode" "$SEED_DURATION" "$(field "$OUT/seed-$mode.json" requests)" \
      "$(field "$OUT/seed-$mode.json" "answers.get('issued',0)")" "$(field "$OUT/seed-$mode.json" "answers.get('sold_out',0)")" \
      "$(field "$OUT/seed-$mode.json" "requests-answers.get('issued',0)-answers.get('sold_out',0)-answers.get('already_issued',0)")" \
      "$(field "$OUT/seed-$mode.json" "latency_ms['avg']")" "$(field "$OUT/seed-$mode.json" "latency_ms['p95']")" \
      "$(field "$OUT/seed-$mode.json" "latency_ms['p99']")" "$(field "$OUT/seed-$mode.json" "consistency['ok']")"
    [[ ! -f $OUT/floor-beside-$mode.json ]] || printf 'floor    bare producer 2800/s beside the seed of %s: p50=%.2fms p95=%.2fms p99=%.2fms\n' \
      "$mode" "$(field "$OUT/floor-beside-$mode.json" "latency_ms['p50']")" "$(field "$OUT/floor-beside-$mode.json" "latency_ms['p95']")" \
      "$(field "$OUT/floor-beside-$mode.json" "latency_ms['p99']")"
    [[ ${mode%%:*} != after-log ]] || printf 'floor    bare producer 200/s beside the seed: p50=%.2fms p95=%.2fms p99=%.2fms\n' \
      "$(field "$OUT/floor-under-load-$mode.json" "latency_ms['p50']")" "$(field "$OUT/floor-under-load-$mode.json" "latency_ms['p95']")" \
      "$(field "$OUT/floor-under-load-$mode.json" "latency_ms['p99']")"
  fi
  best=0
  for rate in $STEPS; do
    f="$OUT/step-$mode-$rate.json"
    loadgen --mode rate --rate "$rate" --duration "$STEP_DURATION" --max-in-flight 3000 --stock 1000000000 \
      --wait-stored 120s >"$f" || true
    p99=$(field "$f" "latency_ms['p99']")
    achieved=$(field "$f" "achieved_rate")
    dropped=$(field "$f" dropped)
    printf '%-11s rate %6s/s: achieved=%8.0f/s p50=%.2fms p99=%.2fms dropped=%s consistency=%s\n' "$mode" "$rate" "$achieved" \
      "$(field "$f" "latency_ms['p50']")" "$p99" "$dropped" "$(field "$f" "consistency['ok']")"
    if [[ $mode == after-log ]]; then
      # The floor at the same rate, right after the step, with the stack idle.
      floor "$rate" "$(secs "$STEP_DURATION")" >"$OUT/floor-$rate.json"
      fp99=$(field "$OUT/floor-$rate.json" "latency_ms['p99']")
      printf '%-11s rate %6s/s: bare producer p50=%.2fms p99=%.2fms; after-log p99 - floor p99 = %.2f ms (goal <= 1)\n' floor "$rate" \
        "$(field "$OUT/floor-$rate.json" "latency_ms['p50']")" "$fp99" "$(python3 -c "print($p99 - $fp99)")"
    fi
    if python3 -c "import sys; sys.exit(0 if $p99 < 10 and $dropped == 0 and $achieved >= 0.97 * $rate else 1)"; then
      best=$rate
    else
      break
    fi
  done
  echo "$best" >"$OUT/best-$mode"
  f="$OUT/max-$mode.json"
  cpu_snapshot >"$OUT/cpu-before-$mode"
  before=$(server_cpu)
  loadgen --mode max --concurrency 256 --duration "$STEP_DURATION" --stock 1000000000 --wait-stored 120s >"$f" || true
  after=$(server_cpu)
  cpu_snapshot >"$OUT/cpu-after-$mode"
  python3 -c "import json,sys; json.dump(dict(server_cpu_s=float(sys.argv[2]) - float(sys.argv[1])), open(sys.argv[3], 'w'))" \
    "$before" "$after" "$OUT/cpu-$mode.json"
  printf '%-11s closed loop CPU-seconds (until every coupon was stored): %s\n' "$mode" \
    "$(cpu_between "$OUT/cpu-before-$mode" "$OUT/cpu-after-$mode")"
  printf '%-11s highest step with p99 < 10 ms: %s/s = %.3f x wrk /healthz; closed loop (256): %.0f/s p99=%.2fms, server CPU %.1f us per issued coupon\n' \
    "$mode" "$best" "$(python3 -c "print($best / $WRK)")" "$(field "$f" achieved_rate)" "$(field "$f" "latency_ms['p99']")" \
    "$(python3 -c "import json; print(json.load(open('$OUT/cpu-$mode.json'))['server_cpu_s'] * 1e6 / max(1, json.load(open('$f'))['answers'].get('issued', 0)))")"
  stop_stack
done

python3 scripts/bench-table.py "$OUT" $MODES | tee "$OUT/table.md"
echo "total: $(((SECONDS - STARTED) / 60)) min $(((SECONDS - STARTED) % 60)) s"
