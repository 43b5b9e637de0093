#!/usr/bin/env bash
# The full chaos run (issue 8, "Faults"), by one command:
#
#   deploy/chaos.sh [SEED]          e.g. deploy/chaos.sh 1733512345
#
# Three clinics feed HQ over Kafka (librdkafka's mock cluster) while a randomised OpenMRS
# workload runs and processes, brokers, databases, links and spool disks fail at seeded random
# moments (tests/chaos.rs says which and what is checked). This runs the full size
# (TRIBUTARY_CHAOS=full: three times the faults of the reduced run `cargo test` makes, held
# longer, a larger workload). It prints the seed first and a table of the faults injected; pass
# the seed back to replay a run's choices. Root is needed for the network cuts (network
# namespaces) and the full spool disks (tmpfs); without it those two are skipped, said so.
#
# 1. installs mariadb-server and the build dependencies with apt-get if they are missing,
# 2. cargo build -p tributary (the test drives target/debug/tributary),
# 3. cargo test -p tributary-suite --test chaos -- --nocapture.
# The exit code is cargo's.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="chaos.sh"
cd "$TRIBUTARY_REPO_ROOT"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ $# -gt 1 ]]; then
  die "one argument at most, the seed (see --help)"
fi
if [[ $# -eq 1 ]]; then
  [[ "$1" =~ ^[0-9]+$ ]] || die "the seed is a number, not '$1'"
  export TRIBUTARY_CHAOS_SEED="$1"
fi

ensure_mariadb_server
ensure_build_deps
ensure_test_tools
ensure_cargo

TARGET_DIR="${CARGO_TARGET_DIR:-$TRIBUTARY_REPO_ROOT/target}"
export TRIBUTARY_SERVICES_CACHE="${TRIBUTARY_SERVICES_CACHE:-$TARGET_DIR/tributary-services/templates}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export TRIBUTARY_CHAOS=full
mkdir -p "$TARGET_DIR"
ensure_free_disk "$TARGET_DIR" 8

LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)

log "cargo build -p tributary ${LOCKED[*]}"
cargo build -p tributary "${LOCKED[@]}"
log "cargo test -p tributary-suite --test chaos (TRIBUTARY_CHAOS=full${TRIBUTARY_CHAOS_SEED:+, TRIBUTARY_CHAOS_SEED=$TRIBUTARY_CHAOS_SEED})"
exec cargo test -p tributary-suite --test chaos "${LOCKED[@]}" -- --nocapture
