#!/usr/bin/env bash
# Runs every benchmark with the reference tools side by side and writes docs/benchmarks.md:
#
#   deploy/bench-report.sh [--quick] [--out FILE] [BENCH ...]
#
# BENCH: capture, apply, seed, fleet, kafka, latency (default: all of them, in that order).
# --quick: smaller sizes (a few minutes in all), for checking the report itself; the figures
#          of a quick run are labelled as such.
# --out:   where to write the report (default docs/benchmarks.md).
#
# Each benchmark starts its own MariaDB instances (and tansu for kafka and latency) under the
# build directory and stops them at the end; this script installs what is missing first
# (MariaDB, the librdkafka build dependencies, tansu), as deploy/test.sh does. The report
# holds the machine, the versions, each benchmark's command and its printed figures verbatim
# (rows/s, ratios to the reference tools, peak RSS, CPU seconds). Numbers are reported, never
# asserted. A benchmark that fails is reported as failed with the tail of its log, and the
# script exits non-zero after writing the report.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="bench-report.sh"
cd "$TRIBUTARY_REPO_ROOT"

ALL_BENCHES=(capture apply seed fleet kafka latency)
quick=0
out="docs/benchmarks.md"
benches=()
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --out)
      shift
      [[ $# -gt 0 ]] || die "--out needs a file name"
      out="$1"
      ;;
    -h | --help)
      sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [[ " ${ALL_BENCHES[*]} " == *" $1 "* ]] || die "unknown benchmark '$1'; choose from: ${ALL_BENCHES[*]}"
      benches+=("$1")
      ;;
  esac
  shift
done
((${#benches[@]})) || benches=("${ALL_BENCHES[@]}")

ensure_mariadb_server
ensure_build_deps
ensure_cargo
ensure_tansu

# Sizes: the benchmarks' defaults, or small ones with --quick. Capture runs three times, as
# does mariadb-binlog beside it, and the fastest run of each is reported: on a shared virtual
# machine one run of either can be a third slower than the next.
bench_env() {
  local bench="$1"
  if ((quick == 0)); then
    [[ $bench == capture ]] && echo "TRIBUTARY_BENCH_REPEAT=3"
    return 0
  fi
  case "$bench" in
    capture) echo "TRIBUTARY_BENCH_ROWS=100000" ;;
    apply) echo "TRIBUTARY_BENCH_ROWS=20000" ;;
    seed) echo "TRIBUTARY_BENCH_ROWS=100000" ;;
    fleet) echo "TRIBUTARY_BENCH_ROWS=8000 TRIBUTARY_BENCH_SITE_COUNTS=1,10" ;;
    kafka) echo "TRIBUTARY_BENCH_BATCHES=500" ;;
    latency) echo "TRIBUTARY_BENCH_SECONDS=10" ;;
  esac
}

logs="${CARGO_TARGET_DIR:-$TRIBUTARY_REPO_ROOT/target}/bench-report"
mkdir -p "$logs" "$(dirname "$out")"
# The code the benchmarks run: the commit, and the files changed from it before they start
# (the report itself left out: it is rewritten below).
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
report_path="$(realpath -m --relative-to="$TRIBUTARY_REPO_ROOT" "$out")"
changed="$({ git -C "$TRIBUTARY_REPO_ROOT" diff --name-only HEAD 2>/dev/null || true; } | { grep -vxF "$report_path" || true; } |
  paste -sd, - | sed 's/,/, /g')"
log "building the benchmarks (release)..."
cargo build --release -p tributary --benches >"$logs/build.log" 2>&1 || {
  tail -40 "$logs/build.log" >&2
  die "the benchmarks did not build; see $logs/build.log"
}

failed=()
sections=""
for bench in "${benches[@]}"; do
  env_text="$(bench_env "$bench")"
  command="${env_text:+$env_text }cargo bench --bench $bench"
  log "running: $command"
  started=$(date +%s)
  # shellcheck disable=SC2086 # env_text is a list of NAME=VALUE words
  if env $env_text cargo bench --bench "$bench" >"$logs/$bench.out" 2>"$logs/$bench.err"; then
    status="ok"
  else
    status="FAILED"
    failed+=("$bench")
  fi
  seconds=$(($(date +%s) - started))
  log "$bench: $status in ${seconds} s"
  body="$(cat "$logs/$bench.out")"
  if [[ $status != ok ]]; then
    body+=$'\n'"(failed; the last lines of its log:)"$'\n'"$(tail -25 "$logs/$bench.err")"
  fi
  sections+=$'\n'"## $bench"$'\n\n'"\`$command\` ($status, ${seconds} s in all, loading included)"$'\n\n'"\`\`\`"$'\n'"$body"$'\n'"\`\`\`"$'\n'
done

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
memory_gib="$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
{
  echo "# Benchmarks"
  echo
  echo "Written by \`deploy/bench-report.sh$( ((quick)) && echo " --quick")\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$([[ -n "$changed" ]] && echo " (with local changes to $changed)")."
  ((quick)) && echo "**Quick run: small sizes, for checking the report; not the reference figures.**"
  echo "What each benchmark does and how it compares is in [benches/README.md](../benches/README.md)."
  echo "Wall-clock figures on a virtual machine vary from run to run; the CPU seconds printed"
  echo "beside them vary less. Nothing here is asserted by a test."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | ${cpu:-unknown}, $(nproc) cores |"
  echo "| memory | ${memory_gib} GiB |"
  echo "| kernel | $(uname -r) |"
  echo "| MariaDB | $(mariadbd --version 2>/dev/null | sed 's/^.*Ver //' || echo unknown) |"
  echo "| mariadb-binlog | $(mariadb-binlog --version 2>/dev/null | head -1 || echo unknown) |"
  echo "| Rust | $(rustc --version) |"
  echo "| tansu | $(tansu --version 2>/dev/null || "$HOME/.cargo/bin/tansu" --version 2>/dev/null || echo unknown) |"
  echo "| librdkafka | bundled with rdkafka-sys (see Cargo.lock) |"
  echo "$sections"
} >"$out"
log "wrote $out"
if ((${#failed[@]})); then
  die "failed: ${failed[*]} (logs under $logs)"
fi
