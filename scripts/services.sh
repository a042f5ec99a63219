#!/usr/bin/env bash
# Provision / start / stop the external services used by the integration tests.
#
#   scripts/services.sh up       idempotently install + start everything (reuses running services)
#   scripts/services.sh down     stop only what this script started (redis cluster nodes, tansu)
#   scripts/services.sh env      print `export` lines:  eval "$(scripts/services.sh env)"
#   scripts/services.sh status   one line per service, up or down (exit 1 if any is down)
#
# Services:
#   Redis standalone  127.0.0.1:${COUPON_REDIS_PORT:-6379}        (system service, never stopped here)
#   Redis Cluster     127.0.0.1:${COUPON_REDIS_CLUSTER_PORTS:-7001,7002,7003} (3 masters, no replicas)
#   PostgreSQL        127.0.0.1:${COUPON_POSTGRES_PORT:-5432}     (system service; role and db `coupon_test`)
#   MariaDB           127.0.0.1:${COUPON_MYSQL_PORT:-3306}        (system service; user and db `coupon_test`)
#
# The databases get a dedicated test role (password `coupon_test`, allowed to create the
# databases some tests make for themselves) instead of changes to the host's
# authentication: the administrator's login is only used to create it, over TCP when the
# server lets it in, else over the local socket as the `postgres` / root OS user.
#   Kafka (tansu)     127.0.0.1:${COUPON_KAFKA_PORT:-9092}        (SQLite storage, emptied at each start)
#   nginx             the binary only (Debian package); tests start their own instances
#   promtool          the binary only (Debian package `prometheus`): checks and tests deploy/prometheus
#
# All diagnostics go to stderr; only `env` writes to stdout.
#
# Tunables (env vars):
#   COUPON_SERVICES_DIR            state dir (pid files, logs, cluster node dirs); default /tmp/coupon-services
#   COUPON_REDIS_PORT              default 6379
#   COUPON_REDIS_CLUSTER_PORTS     comma or space separated, >= 3 ports; default 7001,7002,7003
#   COUPON_POSTGRES_PORT           default 5432 (must match the port of the installed cluster)
#   COUPON_POSTGRES_USER           default postgres
#   COUPON_MYSQL_PORT              default 3306 (must match the server's configured port)
#   COUPON_KAFKA_PORT              default 9092
#   COUPON_TANSU_BIN               explicit path to the tansu binary
#   COUPON_WAIT_TIMEOUT            seconds to wait for a service to come up; default 60
#   COUPON_TANSU_INSTALL_TIMEOUT   seconds allowed for `cargo install tansu`; default 3600
set -euo pipefail

HOST=127.0.0.1
STATE_DIR="${COUPON_SERVICES_DIR:-/tmp/coupon-services}"
REDIS_PORT="${COUPON_REDIS_PORT:-6379}"
read -r -a CLUSTER_PORTS <<<"$(tr ',' ' ' <<<"${COUPON_REDIS_CLUSTER_PORTS:-7001,7002,7003}")"
PG_PORT="${COUPON_POSTGRES_PORT:-5432}"
PG_USER="${COUPON_POSTGRES_USER:-postgres}"
MYSQL_PORT="${COUPON_MYSQL_PORT:-3306}"
KAFKA_PORT="${COUPON_KAFKA_PORT:-9092}"
WAIT_TIMEOUT="${COUPON_WAIT_TIMEOUT:-60}"
TANSU_INSTALL_TIMEOUT="${COUPON_TANSU_INSTALL_TIMEOUT:-3600}"
# tansu 0.6.0's in-memory engine answers ListOffsets EARLIEST and LATEST from the
# batches' write times rather than their offsets, and a fetch from inside a batch skips
# the rest of it (tansu-storage src/dynostore.rs). Its SQLite engine answers both by
# offset. The path is relative to the broker's working directory, $STATE_DIR. (The SQLite
# engine has a limit of its own: a producer whose messages time out bumps its epoch, which
# it does not survive; tests that pause a broker start one of their own, in memory.)
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
TANSU_STORAGE="${COUPON_TANSU_STORAGE:-sqlite://tansu.db}"
LOCK_TIMEOUT="${COUPON_SERVICES_LOCK_TIMEOUT:-1200}"
TEST_ROLE=coupon_test
TEST_PASSWORD=coupon_test

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT=5

SUDO=""
if [[ ${EUID} -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# --------------------------------------------------------------------------- helpers

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# excerpt <file>: the last lines of a service's own log, for a failure message.
excerpt() {
  if [[ -s $1 ]]; then
    printf '\n--- last lines of %s ---\n%s' "$1" "$(tail -n 20 "$1")"
  else
    printf ' (%s is empty)' "$1"
  fi
}

# One `up` or `down` at a time per state dir: two at once would both see a port free
# and start two copies, and the second would fail to bind. The lock is fd 9: every
# daemon started below closes it (`9>&-`), or it would hold the lock for its lifetime.
take_lock() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/services.lock"
  if ! flock -n 9; then
    log "another services.sh holds $STATE_DIR/services.lock; waiting (up to ${LOCK_TIMEOUT}s)"
    flock -w "$LOCK_TIMEOUT" 9 || die "could not take $STATE_DIR/services.lock within ${LOCK_TIMEOUT}s"
  fi
}

# wait_until <timeout-seconds> <description> <command...>
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "timed out after ${timeout}s waiting for ${what}"
    fi
    sleep 0.5
  done
}

tcp_open() { # tcp_open <host> <port>
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    $SUDO apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  # policy-rc.d in containers may refuse to start services during install; that's fine,
  # we start them ourselves below.
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

STEP_TIMES=()
timed() { # timed <label> <function...>
  local label=$1; shift
  local t0=$EPOCHREALTIME
  "$@"
  STEP_TIMES+=("$(awk -v a="$t0" -v b="$EPOCHREALTIME" -v l="$label" 'BEGIN { printf "%-14s %6.1fs", l, b - a }')")
}

pid_alive_matching() { # pid_alive_matching <pidfile> <cmdline-substring>
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"
}

pid_running() { # true if the pid exists and is not a zombie (PID 1 may reap slowly in containers)
  [[ -r /proc/$1/stat ]] || return 1
  local stat; stat=$(<"/proc/$1/stat") || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

stop_pidfile() { # stop_pidfile <name> <pidfile> <cmdline-substring>
  local name=$1 pidfile=$2 pattern=$3 pid
  if ! pid_alive_matching "$pidfile" "$pattern"; then
    [[ -e $pidfile ]] && log "$name: stale pid file removed"
    rm -f "$pidfile"
    return 0
  fi
  pid=$(<"$pidfile")
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while pid_running "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$name: pid $pid did not exit after 15s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
}

need_redis_cli() {
  command -v redis-cli >/dev/null 2>&1 && return 0
  apt_install redis-tools
}

rcli() { # rcli <port> <args...>
  timeout 5 redis-cli -h "$HOST" -p "$1" "${@:2}"
}

redis_ping() { [[ "$(rcli "$1" ping 2>/dev/null)" == PONG ]]; }

# --------------------------------------------------------------------------- redis standalone

redis_up() {
  need_redis_cli
  if redis_ping "$REDIS_PORT"; then
    log "redis: already running on $HOST:$REDIS_PORT (reused)"
    return 0
  fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "redis: starting on $HOST:$REDIS_PORT"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind "$HOST" -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 9>&- \
    || die "redis: redis-server failed to start$(excerpt /var/log/redis/ci.log)"
  wait_until "$WAIT_TIMEOUT" "redis on $HOST:$REDIS_PORT to answer PING (log: /var/log/redis/ci.log)" \
    redis_ping "$REDIS_PORT"
}

# --------------------------------------------------------------------------- redis cluster

cluster_info_field() { # cluster_info_field <port> <field>
  rcli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

cluster_all_ok() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do
    [[ "$(cluster_info_field "$p" cluster_state)" == ok ]] || return 1
  done
}

redis_cluster_up() {
  need_redis_cli
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  ((${#CLUSTER_PORTS[@]} >= 3)) || die "redis-cluster: need at least 3 ports, got: ${CLUSTER_PORTS[*]}"
  local p dir started=0
  for p in "${CLUSTER_PORTS[@]}"; do
    dir="$STATE_DIR/redis-cluster/$p"
    if redis_ping "$p"; then
      [[ -n "$(cluster_info_field "$p" cluster_state)" ]] \
        || die "redis-cluster: something on $HOST:$p answers PING but is not a cluster-enabled redis"
      log "redis-cluster: node $p already running (reused)"
      continue
    fi
    mkdir -p "$dir"
    log "redis-cluster: starting node $p"
    redis-server --bind "$HOST" --port "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
      --cluster-node-timeout 2000 --save "" --appendonly no --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2 9>&- \
      || die "redis-cluster: node $p failed to start$(excerpt "$dir/redis.log")"
    started=1
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    wait_until "$WAIT_TIMEOUT" "redis-cluster node $HOST:$p to answer PING (log: $STATE_DIR/redis-cluster/$p/redis.log)" \
      redis_ping "$p"
  done

  # Formed already? Every node must see all slots assigned.
  local formed=1 fresh=1 assigned known
  for p in "${CLUSTER_PORTS[@]}"; do
    assigned=$(cluster_info_field "$p" cluster_slots_assigned)
    known=$(cluster_info_field "$p" cluster_known_nodes)
    [[ $assigned == 16384 ]] || formed=0
    [[ $assigned == 0 && $known == 1 ]] || fresh=0
  done
  if ((formed)); then
    ((started)) && log "redis-cluster: nodes rejoined existing cluster configuration"
  elif ((fresh)); then
    local addrs=()
    for p in "${CLUSTER_PORTS[@]}"; do addrs+=("$HOST:$p"); done
    log "redis-cluster: creating cluster ${addrs[*]}"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2 \
      || die "redis-cluster: 'redis-cli --cluster create' failed"
  else
    log "redis-cluster: nodes are in a partially formed state; waiting for them to converge"
  fi
  wait_until "$WAIT_TIMEOUT" \
    "redis-cluster to report cluster_state:ok on all of ${CLUSTER_PORTS[*]} (try '$0 down' then '$0 up' to recreate it; logs in $STATE_DIR/redis-cluster/*/redis.log)" \
    cluster_all_ok
  log "redis-cluster: cluster_state:ok on ${CLUSTER_PORTS[*]}"
}

redis_cluster_down() {
  local p dir
  for p in "${CLUSTER_PORTS[@]}"; do
    dir="$STATE_DIR/redis-cluster/$p"
    if [[ -e $dir/redis.pid ]]; then
      stop_pidfile "redis-cluster node $p" "$dir/redis.pid" "redis-server"
      # Forget the cluster topology so the next `up` forms a fresh cluster.
      rm -f "$dir/nodes-$p.conf"
    elif redis_ping "$p"; then
      log "redis-cluster: node $p was not started by this script; leaving it alone"
    fi
  done
}

# --------------------------------------------------------------------------- postgres

pg_ready() { pg_isready -q -h "$HOST" -p "$PG_PORT" -t 2; }

pg_psql() { # pg_psql <db> <args...>
  psql -X -q -h "$HOST" -p "$PG_PORT" -U "$PG_USER" -d "$1" -v ON_ERROR_STOP=1 "${@:2}"
}

# as_os_user <user> <command...>: runs a command as another OS user (peer authentication).
as_os_user() {
  if [[ ${EUID} -eq 0 ]]; then runuser -u "$1" -- "${@:2}"; else sudo -u "$1" "${@:2}"; fi
}

pg_admin() { # pg_admin <sql>: one statement as an administrator, tuples only
  if pg_psql postgres -c 'select 1' >/dev/null 2>&1; then
    pg_psql postgres -Atc "$1"
  else
    as_os_user postgres psql -X -q -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -Atc "$1"
  fi
}

# Prints "<version> <cluster>" of the cluster configured on $PG_PORT (or of the first cluster).
pg_find_cluster() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 1
  local line
  line=$(pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port {print $1, $2; exit}')
  [[ -n $line ]] || line=$(pg_lsclusters -h 2>/dev/null | awk 'NR == 1 {print $1, $2}')
  [[ -n $line ]] || return 1
  echo "$line"
}

postgres_up() {
  local cluster=""
  if command -v pg_isready >/dev/null 2>&1 && pg_ready; then
    log "postgres: already accepting connections on $HOST:$PG_PORT (reused)"
  else
    if ! cluster=$(pg_find_cluster); then
      apt_install postgresql
      if ! cluster=$(pg_find_cluster); then
        local ver; ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -1)
        [[ -n $ver ]] || die "postgres: no server version found under /usr/lib/postgresql after install"
        log "postgres: creating cluster $ver/main on port $PG_PORT"
        $SUDO pg_createcluster -p "$PG_PORT" "$ver" main >&2
        cluster=$(pg_find_cluster) || die "postgres: no cluster found after pg_createcluster"
      fi
    fi
    # shellcheck disable=SC2086
    set -- $cluster
    log "postgres: starting cluster $1/$2"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$1" "$2" start >&2 9>&- \
      || die "postgres: 'pg_ctlcluster $1 $2 start' failed (see /var/log/postgresql/)"
    wait_until "$WAIT_TIMEOUT" "postgres on $HOST:$PG_PORT to accept connections (pg_isready)" pg_ready
  fi
  pg_admin "select 1" >/dev/null \
    || die "postgres: cannot log in as an administrator, neither as '$PG_USER' over TCP nor as the postgres OS user"
  if [[ "$(pg_admin "select 1 from pg_roles where rolname = '$TEST_ROLE'")" != 1 ]]; then
    log "postgres: creating the test role $TEST_ROLE (login, createdb)"
    pg_admin "create role $TEST_ROLE login createdb password '$TEST_PASSWORD'" >/dev/null
  fi
  if [[ "$(pg_admin "select 1 from pg_database where datname = '$TEST_ROLE'")" != 1 ]]; then
    log "postgres: creating the database $TEST_ROLE"
    pg_admin "create database $TEST_ROLE owner $TEST_ROLE" >/dev/null
  fi
  wait_until 10 "postgres to accept a login as $TEST_ROLE on $HOST:$PG_PORT" \
    env PGPASSWORD="$TEST_PASSWORD" psql -X -q -h "$HOST" -p "$PG_PORT" -U "$TEST_ROLE" -d "$TEST_ROLE" -c 'select 1'
}

# --------------------------------------------------------------------------- mariadb

mysql_admin_bin() { command -v mariadb-admin 2>/dev/null || command -v mysqladmin 2>/dev/null; }
mysql_bin() { command -v mariadb 2>/dev/null || command -v mysql 2>/dev/null; }

mysql_ping() {
  # `ping` exits 0 when the server answers even if the password is wrong, but not when the
  # host is rejected (error 1130), so an open TCP port also counts as "running".
  local admin
  if admin=$(mysql_admin_bin) && "$admin" -h "$HOST" -P "$MYSQL_PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1; then
    return 0
  fi
  tcp_open "$HOST" "$MYSQL_PORT"
}

mysql_tcp() { # mysql_tcp <sql>
  "$(mysql_bin)" -h "$HOST" -P "$MYSQL_PORT" -uroot --connect-timeout=3 -Nse "$1"
}

mysql_admin() { # mysql_admin <sql>: as root, over TCP if it lets us in, else over the unix socket
  if mysql_tcp 'select 1' >/dev/null 2>&1; then
    mysql_tcp "$1" >/dev/null
  else
    $SUDO "$(mysql_bin)" -uroot --protocol=socket -Nse "$1" >/dev/null
  fi
}

mariadb_up() {
  if mysql_ping; then
    log "mariadb: already running on $HOST:$MYSQL_PORT (reused)"
  else
    local server
    server=$(command -v mariadbd 2>/dev/null || ls /usr/sbin/mariadbd 2>/dev/null || true)
    if [[ -z $server ]] || [[ -z "$(mysql_admin_bin)" ]]; then
      apt_install mariadb-server mariadb-client
      server=$(command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd)
    fi
    [[ -x $server ]] || die "mariadb: server binary not found after install"
    log "mariadb: starting $server"
    $SUDO install -d -o mysql -g mysql /run/mysqld 2>/dev/null || $SUDO mkdir -p /run/mysqld
    $SUDO start-stop-daemon --start --oknodo --background --exec "$server" >&2 9>&- \
      || die "mariadb: start-stop-daemon failed"
    wait_until "$WAIT_TIMEOUT" "mariadb on $HOST:$MYSQL_PORT to answer ping" mysql_ping
  fi
  local grants="CREATE, DROP, ALTER, INDEX, SELECT, INSERT, UPDATE, DELETE, LOCK TABLES, REFERENCES, CREATE TEMPORARY TABLES"
  mysql_admin "CREATE DATABASE IF NOT EXISTS $TEST_ROLE" \
    || die "mariadb: cannot log in as an administrator, neither as root over TCP nor over the unix socket"
  local host
  for host in 127.0.0.1 ::1 localhost; do
    mysql_admin "CREATE USER IF NOT EXISTS '$TEST_ROLE'@'$host' IDENTIFIED BY '$TEST_PASSWORD'"
    # Any database name: some tests create databases of their own.
    mysql_admin "GRANT $grants ON *.* TO '$TEST_ROLE'@'$host'"
  done
  wait_until 10 "mariadb to accept a login as $TEST_ROLE on $HOST:$MYSQL_PORT" \
    "$(mysql_bin)" -h "$HOST" -P "$MYSQL_PORT" -u"$TEST_ROLE" -p"$TEST_PASSWORD" --connect-timeout=3 -Nse 'select 1' "$TEST_ROLE"
}

# --------------------------------------------------------------------------- kafka (tansu)

TANSU_PID="$STATE_DIR/tansu.pid"
TANSU_LOG="$STATE_DIR/tansu.log"

find_tansu() {
  local c
  for c in "${COUPON_TANSU_BIN:-}" "$(command -v tansu 2>/dev/null || true)" \
    "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" "$HOME/.cargo/bin/tansu"; do
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}

find_cargo() {
  command -v cargo 2>/dev/null && return 0
  [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]] && { echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo"; return 0; }
  return 1
}

# Is some other `cargo install tansu` already running? (read-only check)
tansu_install_running() { pgrep -f 'cargo install( .*)? tansu' >/dev/null 2>&1; }

tansu_ensure_installed() {
  TANSU=$(find_tansu) && return 0
  if tansu_install_running; then
    log "kafka: another 'cargo install tansu' is in progress; waiting for it (up to ${TANSU_INSTALL_TIMEOUT}s)"
    local deadline=$((SECONDS + TANSU_INSTALL_TIMEOUT))
    while tansu_install_running; do
      ((SECONDS < deadline)) || die "kafka: timed out after ${TANSU_INSTALL_TIMEOUT}s waiting for the running 'cargo install tansu'"
      sleep 5
    done
    TANSU=$(find_tansu) && return 0
    log "kafka: the concurrent install finished without producing a tansu binary; installing ourselves"
  fi
  local cargo
  cargo=$(find_cargo) || die "kafka: tansu is not installed and cargo is not available (install a Rust toolchain with rustup first)"
  mkdir -p "$STATE_DIR"
  log "kafka: installing tansu with 'cargo install tansu --version $TANSU_VERSION --locked --features $TANSU_FEATURES' (takes ~15 minutes; log: $STATE_DIR/tansu-install.log)"
  timeout "$TANSU_INSTALL_TIMEOUT" "$cargo" install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
    >"$STATE_DIR/tansu-install.log" 2>&1 \
    || die "kafka: 'cargo install tansu' failed or timed out after ${TANSU_INSTALL_TIMEOUT}s (see $STATE_DIR/tansu-install.log)"
  TANSU=$(find_tansu) || die "kafka: tansu binary not found after cargo install"
}

kafka_up() {
  if tcp_open "$HOST" "$KAFKA_PORT"; then
    log "kafka: something is already listening on $HOST:$KAFKA_PORT (reused)"
    return 0
  fi
  local TANSU
  tansu_ensure_installed
  # Flag names changed over tansu releases (--kafka-listener-url is the older spelling,
  # still accepted as an alias in 0.6).
  local help listen_flag=--listener-url adv_flag=--advertised-listener-url
  help=$("$TANSU" broker --help 2>&1 || true)
  if ! grep -q -- '--listener-url' <<<"$help" && grep -q -- '--kafka-listener-url' <<<"$help"; then
    listen_flag=--kafka-listener-url adv_flag=--kafka-advertised-listener-url
  fi
  mkdir -p "$STATE_DIR"
  log "kafka: starting $TANSU broker on $HOST:$KAFKA_PORT (storage $TANSU_STORAGE, log: $TANSU_LOG)"
  # Each start writes a log of its own (the previous one is kept as .1), so a failure
  # shows what this process said.
  [[ -e $TANSU_LOG ]] && mv -f "$TANSU_LOG" "$TANSU_LOG.1"
  # A new broker starts empty: nothing from an earlier run's topics or groups.
  rm -f "$STATE_DIR"/tansu.db "$STATE_DIR"/tansu.db-*
  (cd "$STATE_DIR" && exec setsid nohup "$TANSU" broker \
    "$listen_flag" "tcp://$HOST:$KAFKA_PORT" \
    "$adv_flag" "tcp://$HOST:$KAFKA_PORT" \
    --storage-engine "$TANSU_STORAGE") \
    </dev/null >"$TANSU_LOG" 2>&1 9>&- &
  local pid=$!
  echo "$pid" >"$TANSU_PID"
  local deadline=$((SECONDS + WAIT_TIMEOUT))
  until tcp_open "$HOST" "$KAFKA_PORT"; do
    # kill -0, not pid_alive_matching: until the subshell has exec'd tansu its command
    # line is this script's, and waiting on a live broker would hang here for good.
    if ! kill -0 "$pid" 2>/dev/null; then
      local status=0
      wait "$pid" || status=$?
      die "kafka: tansu exited during startup with status $status (a binary built without the storage engine of $TANSU_STORAGE fails so: cargo install tansu --version $TANSU_VERSION --locked --features $TANSU_FEATURES --force)$(excerpt "$TANSU_LOG")"
    fi
    ((SECONDS < deadline)) || die "timed out after ${WAIT_TIMEOUT}s waiting for kafka (tansu) on $HOST:$KAFKA_PORT (log: $TANSU_LOG)"
    sleep 0.5
  done
}

kafka_down() {
  if [[ -e $TANSU_PID ]]; then
    stop_pidfile "kafka (tansu)" "$TANSU_PID" tansu
  elif tcp_open "$HOST" "$KAFKA_PORT"; then
    log "kafka: $HOST:$KAFKA_PORT was not started by this script; leaving it alone"
  fi
}

# --------------------------------------------------------------------------- commands

cluster_urls() {
  local p out=()
  for p in "${CLUSTER_PORTS[@]}"; do out+=("redis://$HOST:$p/"); done
  (IFS=,; echo "${out[*]}")
}

nginx_bin() {
  command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true
}

nginx_up() {
  if [[ -n "$(nginx_bin)" ]]; then
    log "nginx: $(nginx_bin) present (reused; tests start their own instances)"
    return 0
  fi
  # The package's start script is refused in containers without an init; the tests
  # run nginx themselves on their own ports, so that is fine.
  apt_install nginx
  [[ -n "$(nginx_bin)" ]] || die "nginx: installed, but no nginx binary found"
}

promtool_bin() {
  command -v promtool 2>/dev/null || true
}

promtool_up() {
  if [[ -n "$(promtool_bin)" ]]; then
    log "promtool: $(promtool_bin) present (reused)"
    return 0
  fi
  # The package also brings the prometheus server; its start script is refused in
  # containers without an init, and nothing here needs it running.
  apt_install prometheus
  [[ -n "$(promtool_bin)" ]] || die "promtool: installed, but no promtool binary found"
}

cmd_env() {
  echo "export COUPON_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT/"
  echo "export COUPON_TEST_REDIS_CLUSTER_URLS=$(cluster_urls)"
  echo "export COUPON_TEST_POSTGRES_URL=postgres://$TEST_ROLE:$TEST_PASSWORD@$HOST:$PG_PORT/$TEST_ROLE"
  echo "export COUPON_TEST_MYSQL_URL=mysql://$TEST_ROLE:$TEST_PASSWORD@$HOST:$MYSQL_PORT/$TEST_ROLE"
  echo "export COUPON_TEST_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
  local nginx
  nginx="$(nginx_bin)"
  [[ -z "$nginx" ]] || echo "export COUPON_TEST_NGINX=$nginx"
  local promtool
  promtool="$(promtool_bin)"
  [[ -z "$promtool" ]] || echo "export COUPON_TEST_PROMTOOL=$promtool"
}

status_lines() { # prints lines, returns 1 if anything is down
  local rc=0 p state
  if command -v redis-cli >/dev/null 2>&1 && redis_ping "$REDIS_PORT"; then
    echo "redis          up    redis://$HOST:$REDIS_PORT/"
  else
    echo "redis          down  redis://$HOST:$REDIS_PORT/"; rc=1
  fi
  local nodes=()
  state=ok
  for p in "${CLUSTER_PORTS[@]}"; do
    if command -v redis-cli >/dev/null 2>&1 && redis_ping "$p"; then
      nodes+=("$p:$(cluster_info_field "$p" cluster_state)")
      [[ "$(cluster_info_field "$p" cluster_state)" == ok ]] || state=down
    else
      nodes+=("$p:down"); state=down
    fi
  done
  [[ $state == ok ]] || rc=1
  printf 'redis-cluster  %-5s %s  (nodes %s)\n' "$([[ $state == ok ]] && echo up || echo down)" "$(cluster_urls)" "${nodes[*]}"
  if command -v pg_isready >/dev/null 2>&1 && pg_ready && pg_psql test -c 'select 1' >/dev/null 2>&1; then
    echo "postgres       up    postgres://$TEST_ROLE@$HOST:$PG_PORT/$TEST_ROLE"
  else
    echo "postgres       down  postgres://$TEST_ROLE@$HOST:$PG_PORT/$TEST_ROLE"; rc=1
  fi
  if [[ -n "$(mysql_bin)" ]] && mysql_tcp 'use test; select 1' >/dev/null 2>&1; then
    echo "mariadb        up    mysql://$TEST_ROLE@$HOST:$MYSQL_PORT/$TEST_ROLE"
  else
    echo "mariadb        down  mysql://$TEST_ROLE@$HOST:$MYSQL_PORT/$TEST_ROLE"; rc=1
  fi
  local kinfo=""
  pid_alive_matching "$TANSU_PID" tansu && kinfo="  (tansu pid $(<"$TANSU_PID"), log $TANSU_LOG)"
  if tcp_open "$HOST" "$KAFKA_PORT"; then
    echo "kafka          up    $HOST:$KAFKA_PORT$kinfo"
  else
    echo "kafka          down  $HOST:$KAFKA_PORT"; rc=1
  fi
  if [[ -n "$(nginx_bin)" ]]; then
    echo "nginx          up    $(nginx_bin) (binary)"
  else
    echo "nginx          down  (not installed)"; rc=1
  fi
  if [[ -n "$(promtool_bin)" ]]; then
    echo "promtool       up    $(promtool_bin) (binary)"
  else
    echo "promtool       down  (not installed)"; rc=1
  fi
  return $rc
}

cmd_up() {
  take_lock
  local t0=$SECONDS
  timed redis redis_up
  timed redis-cluster redis_cluster_up
  timed postgres postgres_up
  timed mariadb mariadb_up
  timed kafka kafka_up
  timed nginx nginx_up
  timed promtool promtool_up
  log "all services up in $((SECONDS - t0))s (state dir: $STATE_DIR)"
  local l
  for l in "${STEP_TIMES[@]}"; do log "  step $l"; done
  status_lines | sed 's/^/[services]   /' >&2 || die "some service is not healthy after 'up' (see above)"
}

cmd_down() {
  take_lock
  redis_cluster_down
  kafka_down
  log "stopped what this script started; system redis/postgres/mariadb left running"
}

cmd_status() {
  status_lines
}

usage() {
  cat >&2 <<EOF
usage: $0 {up|down|env|status}
  up      install (apt/cargo) and start any missing service; reuse running ones
  down    stop the redis cluster nodes and tansu started by this script
  env     print export lines:  eval "\$($0 env)"
  status  one line per service (exit 1 if any is down)
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac
