#!/usr/bin/env bash
# The demo (README's first command):
#
#   deploy/demo.sh [--patients N] [--live-patients N]
#
# Installs MariaDB if it is missing, builds `tributary`, starts a private site and HQ MariaDB
# under target/demo/ on free loopback ports, runs `tributary demo` (load an OpenMRS-shaped
# dataset at the site, seed it into HQ, stream live changes, print per-site status and a
# verification), and stops both instances at the end, also on failure or Ctrl-C.
# The exit code is the demo's: 0 when HQ verified equal to the site.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="demo.sh"
cd "$TRIBUTARY_REPO_ROOT"

ensure_mariadb_server
ensure_build_deps
ensure_cargo

TARGET_DIR="${CARGO_TARGET_DIR:-$TRIBUTARY_REPO_ROOT/target}"
DEMO="$TARGET_DIR/demo"
export TRIBUTARY_SERVICES_CACHE="${TRIBUTARY_SERVICES_CACHE:-$TARGET_DIR/tributary-services/templates}"

log "building tributary (the first build takes a few minutes)"
cargo build --locked -p tributary --bin tributary

stop_instances() {
  deploy/mariadb.sh stop "$DEMO/site" >/dev/null 2>&1 || true
  deploy/mariadb.sh stop "$DEMO/hq" >/dev/null 2>&1 || true
}
trap stop_instances EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_instances
rm -rf -- "$DEMO/site" "$DEMO/hq"
mkdir -p "$DEMO"
deploy/mariadb.sh start "$DEMO/site" --role site >/dev/null
deploy/mariadb.sh start "$DEMO/hq" --role hq >/dev/null

RUST_LOG="${RUST_LOG:-warn}" "$TARGET_DIR/debug/tributary" demo \
  --site-env "$DEMO/site/env" --hq-env "$DEMO/hq/env" --work-dir "$DEMO/work" "$@"
