#!/usr/bin/env bash
# The project's one test command (CI runs exactly this through .ci/run):
#
#   deploy/test.sh [EXTRA CARGO TEST ARGS...]     e.g. deploy/test.sh -p tributary-suite -- --nocapture
#
# 1. installs mariadb-server, the librdkafka build dependencies and the test tools (openssl,
#    socat) with apt-get if they are missing (never starts the system service), and the tansu
#    broker with cargo install,
# 2. cargo build --workspace --all-targets   (so the tests find target/debug/tributary),
# 3. cargo test --workspace --no-fail-fast "$@",
# and on exit, also on failure or Ctrl-C, stops every MariaDB instance and kills every
# process this run started (they carry TRIBUTARY_TEST_RUN_ID in their environment).
# The exit code is cargo's; the last line sums up the tests.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="test.sh"
cd "$TRIBUTARY_REPO_ROOT"

ensure_mariadb_server
ensure_build_deps
ensure_test_tools
ensure_cargo
ensure_tansu

TARGET_DIR="${CARGO_TARGET_DIR:-$TRIBUTARY_REPO_ROOT/target}"
SERVICES="$TARGET_DIR/tributary-services"
export TRIBUTARY_SERVICES_CACHE="${TRIBUTARY_SERVICES_CACHE:-$SERVICES/templates}"
TRIBUTARY_TEST_RUN_ID="$(date +%Y%m%d%H%M%S)-$$"
export TRIBUTARY_TEST_RUN_ID
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
[[ -t 1 ]] && export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"
mkdir -p "$SERVICES"

# Instances left by earlier runs that were killed hard: stop them (only those whose
# starting test process is gone, so a concurrent cargo test keeps its own) and remove them.
tidy_leftovers() {
  deploy/mariadb.sh stop-all "$SERVICES" --orphans || true
  local t towner
  for t in "$SERVICES"/*/tansu; do
    [[ -f "$t/env" ]] || continue
    towner="$(sed -n 's/^OWNER_PID=//p' "$t/env")"
    if [[ -n "$towner" && -d "/proc/$towner" ]]; then continue; fi
    deploy/tansu.sh stop "$t" || true
  done
  # The chaos suite's spool disks (tmpfs mounts under the services directory) and network
  # namespaces (trib-chaos-<test pid>-<site>), when the test process that made them is gone.
  local mnt svc mowner
  while read -r mnt; do
    svc="${mnt#"$SERVICES"/}"
    svc="${svc%%/*}"
    mowner="$(sed -n 's/^OWNER_PID=//p' "$SERVICES/$svc/env" 2>/dev/null)"
    if [[ -n "$mowner" && -d "/proc/$mowner" ]]; then continue; fi
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v root="$SERVICES/" '$3 == "tmpfs" && index($2, root) == 1 { print $2 }' /proc/mounts)
  local ns nspid
  if command -v ip >/dev/null 2>&1; then
    while read -r ns; do
      nspid="${ns#trib-chaos-}"
      nspid="${nspid%%-*}"
      [[ -n "$nspid" && -d "/proc/$nspid" ]] && continue
      ip netns delete "$ns" 2>/dev/null || true
    done < <(ip netns list 2>/dev/null | awk '$1 ~ /^trib-chaos-/ { print $1 }')
  fi
  # tributary processes an earlier run started, when that run's test command is gone (its
  # run id ends with its pid).
  local p vars v run
  for p in /proc/[0-9]*; do
    [[ "$(cat "$p/comm" 2>/dev/null)" == "tributary" ]] || continue
    vars=()
    { mapfile -d '' -t vars <"$p/environ"; } 2>/dev/null || continue
    for v in "${vars[@]}"; do
      [[ "$v" == TRIBUTARY_TEST_RUN_ID=* ]] || continue
      run="${v##*-}"
      if [[ -n "$run" && ! -d "/proc/$run" ]]; then
        kill -KILL "${p#/proc/}" 2>/dev/null || true
      fi
      break
    done
  done
  local envf d owner
  for envf in "$SERVICES"/*/env; do
    [[ -f "$envf" ]] || continue
    d="$(dirname "$envf")"
    owner="$(sed -n 's/^OWNER_PID=//p' "$envf")"
    if [[ -n "$owner" && -d "/proc/$owner" ]]; then continue; fi
    if deploy/mariadb.sh status "$d" >/dev/null 2>&1; then continue; fi
    rm -rf -- "$d"
  done
}
tidy_leftovers

# kill_run_processes SIGNAL: signal every process (but this shell) whose environment
# holds our TRIBUTARY_TEST_RUN_ID; prints how many.
kill_run_processes() {
  local sig="$1" p pid n=0 vars v
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    [[ "$pid" == "$$" || "$pid" == "${BASHPID}" ]] && continue
    vars=()
    # (Kernel threads and processes that just exited have no readable environ.)
    { mapfile -d '' -t vars <"$p/environ"; } 2>/dev/null || continue
    for v in "${vars[@]}"; do
      if [[ "$v" == "TRIBUTARY_TEST_RUN_ID=$TRIBUTARY_TEST_RUN_ID" ]]; then
        kill "-$sig" "$pid" 2>/dev/null && n=$((n + 1))
        break
      fi
    done
  done
  printf '%s' "$n"
}

JOB_PID=""
CLEANED=0
OUT=""
RCFILE=""
cleanup() {
  ((CLEANED)) && return 0
  CLEANED=1
  rm -f -- "${OUT:-}" "${RCFILE:-}"
  if [[ -n "$JOB_PID" ]]; then
    disown -a 2>/dev/null || true # no "Terminated" job notice
    kill -TERM -- "-$JOB_PID" 2>/dev/null || true
  fi
  deploy/mariadb.sh stop-all "$SERVICES" --run-id "$TRIBUTARY_TEST_RUN_ID" || true
  local t
  for t in "$SERVICES"/*/tansu; do
    if [[ -f "$t/env" ]]; then deploy/tansu.sh stop "$t" || true; fi
  done
  local n i
  n="$(kill_run_processes TERM)"
  for ((i = 0; i < 50 && n > 0; i++)); do
    sleep 0.1
    n="$(kill_run_processes 0)"
  done
  if ((n > 0)); then
    log "killing $n leftover process(es) of this run"
    kill_run_processes KILL >/dev/null
  fi
}
# shellcheck disable=SC2317 # invoked by trap
on_signal() {
  log "interrupted: cleaning up"
  cleanup
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# run_job CMD...: run CMD as a background job in its own process group (so the signal
# traps fire at once and can kill all of it) and return its exit code.
set -m
run_job() {
  "$@" &
  JOB_PID=$!
  local rc=0
  wait "$JOB_PID" || rc=$?
  JOB_PID=""
  return "$rc"
}

LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)

# A one-off build (CI, a fresh clone) gains nothing from incremental state but its size.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi
mkdir -p "$TARGET_DIR"
ensure_free_disk "$TARGET_DIR" 8

log "cargo build --workspace --all-targets ${LOCKED[*]}"
build_rc=0
run_job cargo build --workspace --all-targets "${LOCKED[@]}" || build_rc=$?
if ((build_rc != 0)); then
  log "FAILED: cargo build exited $build_rc"
  exit "$build_rc"
fi

OUT="$SERVICES/cargo-test-$TRIBUTARY_TEST_RUN_ID.log"
RCFILE="$SERVICES/cargo-test-$TRIBUTARY_TEST_RUN_ID.rc"
log "cargo test --workspace --no-fail-fast ${LOCKED[*]} $*"
# shellcheck disable=SC2317 # invoked through run_job
test_job() {
  set +e
  {
    cargo test --workspace --no-fail-fast "${LOCKED[@]}" "$@" 2>&1
    echo "$?" >"$RCFILE"
  } | tee "$OUT"
}
run_job test_job "$@" || true
test_rc="$(cat "$RCFILE" 2>/dev/null || echo 1)"

# Sum cargo's "test result: ok. N passed; N failed; N ignored; ..." lines.
read -r passed failed ignored < <(
  sed 's/\x1b\[[0-9;]*m//g' "$OUT" | awk '
    /^test result: / {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed;?$/) p += $i
        if ($(i+1) ~ /^failed;?$/) f += $i
        if ($(i+1) ~ /^ignored;?$/) g += $i
      }
    }
    END { printf "%d %d %d\n", p, f, g }'
)
cleanup
if ((test_rc == 0)); then
  log "PASSED (cargo test exit 0)"
else
  log "FAILED (cargo test exit $test_rc)"
  # A build error or a crashed test binary fails no test by name: still count a failure.
  ((failed > 0)) || failed=1
fi
printf 'tests: %s passed, %s failed, %s skipped\n' "$passed" "$failed" "$ignored"
exit "$test_rc"
