#!/usr/bin/env bash
# The whole suite against real services, as CI runs it:
#   1. start the services (reusing any already running),
#   2. format and lint checks,
#   3. every test with COUPON_REQUIRE_SERVICES=1 (a missing service fails, never skips),
#   4. the documentation examples,
#   5. the whole-system fault suite's short mixed schedule (coupon-chaos; RELIABILITY.md).
# Extra arguments go to `cargo nextest run` (e.g. `scripts/test.sh -p coupon-core`).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Free space, so a build that runs out of disk is recognised at once in the log.
df -h . >&2 || true

step "services"
scripts/services.sh up
eval "$(scripts/services.sh env)"
export COUPON_REQUIRE_SERVICES=1

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo build --bins"
# The end-to-end tests run the server and consumer binaries as real processes.
cargo build --workspace --bins --all-features

step "cargo nextest run"
cargo nextest run --workspace --all-features "$@"

step "doc tests"
cargo test --workspace --all-features --doc

step "each feature on its own (clippy, warnings are errors)"
for spec in coupon-core: coupon-core:conformance coupon-core:mock coupon-core:metrics \
  coupon-sql: coupon-sql:postgres coupon-sql:mysql coupon-sql:sqlite coupon-sql:tls-rustls \
  coupon-redis: coupon-redis:tls-rustls coupon-kafka: coupon-kafka:ssl \
  coupon: coupon:redis coupon:kafka coupon:postgres coupon:mysql coupon:sqlite coupon:metrics coupon:tls-rustls coupon:kafka-ssl; do
  package=${spec%%:*} feature=${spec#*:}
  printf '  %s [%s]\n' "$package" "${feature:-no features}" >&2
  cargo clippy -q -p "$package" --no-default-features ${feature:+--features "$feature"} -- -D warnings
done

step "cargo doc (rustdoc warnings, such as broken links, are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features

if [[ $# -eq 0 ]]; then
  step "coupon-chaos: the short mixed schedule in every ack mode"
  # Its own Redis Cluster, broker and PostgreSQL; the shared services are not touched.
  # Seeded from the commit, so a failure names a seed that replays it.
  target/debug/coupon-chaos run mixed --short --seed "$((16#$(git rev-parse --short=6 HEAD 2>/dev/null || echo 1)))"
fi
