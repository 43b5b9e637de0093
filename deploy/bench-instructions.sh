#!/usr/bin/env bash
# Counts the instructions capture spends per row, and mariadb-binlog -v's on the same binlog:
#
#   deploy/bench-instructions.sh [ROWS]      (default 20000)
#
# Wall and CPU time on a shared virtual machine vary by a third from run to run, and such
# machines rarely expose hardware counters; instruction counts under callgrind do not vary, so
# two builds can be compared by one run each. The capture benchmark (`benches/capture.rs`)
# runs once under `valgrind --tool=callgrind` with ROWS row events and one capture; the script
# prints, per row:
#   - the capture loop: reading the binlog stream (mysql_async, mysql_common), framing and
#     decoding row events, annotating them into the rows' JSON, publishing batches,
#   - the sealing thread (zstd, XChaCha20-Poly1305, spool writes),
#   - `mariadb-binlog --verbose` on the same binlog files (traced as the bench's child),
# and the ratio of mariadb-binlog's instructions to capture's two threads. To compare builds,
# copy each build's bench binary (target/release/deps/capture-*) aside and name it in
# TRIBUTARY_BENCH_BINARY (the script builds and runs the current tree's otherwise). Instructions are not
# time (a cache miss costs the same as an add here): compare builds with it, and report time
# with `cargo bench --bench capture`. Installs valgrind with apt-get when it is missing; the
# benchmark starts and removes its own MariaDB.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="bench-instructions.sh"
cd "$TRIBUTARY_REPO_ROOT"

case "${1:-}" in
  -h | --help)
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
rows="${1:-20000}"
[[ "$rows" =~ ^[0-9]+$ ]] || die "ROWS must be a number of row events, not '$rows'"

ensure_mariadb_server
ensure_build_deps
ensure_cargo
command -v valgrind >/dev/null 2>&1 || apt_install "callgrind" "valgrind" valgrind

bench="${TRIBUTARY_BENCH_BINARY:-}"
if [[ -z "$bench" ]]; then
  bench=$(cargo bench --bench capture --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*capture-[^"]*\)".*/\1/p' | tail -1)
fi
[[ -x "$bench" ]] || die "no capture benchmark to run: '$bench' (build it with cargo bench --bench capture --no-run)"

out=$(mktemp -d "${TMPDIR:-/tmp}/tributary-instructions.XXXXXX")
trap 'rm -rf "$out"' EXIT
log "counting $rows rows under callgrind (about a minute per 10,000 rows)"
TRIBUTARY_BENCH_ROWS="$rows" TRIBUTARY_BENCH_REPEAT=1 valgrind --tool=callgrind \
  --separate-threads=yes --trace-children=yes \
  --trace-children-skip='*mariadbd*,*bash*,*/sh,*mariadb-admin*,*/mariadb,*install-db*' \
  --callgrind-out-file="$out/callgrind.%p" "$bench" --bench >"$out/bench.log" 2>&1 ||
  { tail -20 "$out/bench.log" >&2; die "the capture benchmark failed under callgrind"; }

totals() { sed -n 's/^totals: *//p' "$1"; }
# The bench process wrote one file per thread (.../callgrind.PID-NN), mariadb-binlog its own.
main=$(grep -l '^cmd: .*--bench' "$out"/callgrind.*-01 || true)
[[ -n "$main" ]] || die "callgrind wrote no file for the benchmark's main thread (see $out)"
trap - EXIT
pid="${main##*callgrind.}"
pid="${pid%-01}"
callgrind_annotate --inclusive=yes "$main" >"$out/inclusive.txt"
callgrind_annotate --tree=caller --inclusive=yes "$main" >"$out/callers.txt"
# The capture loop's work: reading the stream, decoding, annotating and publishing. These
# four inclusive counts are summed rather than the loop's own: callgrind attributes the loop's
# inlined async frames inconsistently from run to run.
inclusive_of() {
  awk -v name="$1" 'index($0, name " [") { gsub(",", "", $1); print $1; exit }' \
    "$out/inclusive.txt"
}
decoding=$(inclusive_of "tributary_capture::binlog::TransactionAssembler::feed")
annotating=$(inclusive_of "tributary_capture::annotate::annotate::{{closure}}")
publishing=$(inclusive_of "tributary_capture::publisher::Publisher::flush")
# The binlog stream as the capture loop calls it (the bench also reads it alone).
stream=$(awk '
  NF == 0 { from_loop = "" }
  /< .*stream_session::\{\{closure\}\} \(/ { from_loop = $1 }
  /\*  .*BinlogStream as futures_core::stream::Stream>::poll_next/ {
    gsub(",", "", from_loop); print from_loop; exit
  }' "$out/callers.txt")
loop=$((${stream:-0} + ${decoding:-0} + ${annotating:-0} + ${publishing:-0}))
sealer=0
for file in "$out"/callgrind."$pid"-*; do
  if grep -q 'ZSTD_compress' "$file"; then
    sealer=$(totals "$file")
  fi
done
reference_file=$(grep -l '^cmd: .*mariadb-binlog' "$out"/callgrind.* || true)
reference=$(totals "${reference_file%%$'\n'*}")
events=$(sed -n 's/^capture benchmark: \([0-9]*\) row events.*/\1/p' "$out/bench.log")
[[ -n "$stream" && -n "$decoding" && -n "$annotating" && -n "$reference" && -n "$events" &&
  "$events" -gt 0 ]] ||
  die "could not read the counts (callgrind files kept in $out)"
rm -rf "$out"

per_row() { awk -v n="$1" -v r="$events" 'BEGIN { printf "%.1fk", n / r / 1000 }'; }
echo "instructions per row ($events row events, one capture)"
echo "  capture loop              $(per_row "$loop")"
echo "    reading the binlog stream $(per_row "${stream:-0}")"
echo "    framing, decoding rows    $(per_row "${decoding:-0}")"
echo "    annotating, rows' JSON    $(per_row "${annotating:-0}")"
echo "    publishing batches        $(per_row "${publishing:-0}")"
echo "  sealing thread            $(per_row "$sealer")"
echo "  mariadb-binlog --verbose  $(per_row "$reference")"
awk -v a="$reference" -v b="$loop" -v c="$sealer" \
  'BEGIN { printf "  ratio (mariadb-binlog / capture): %.2fx\n", a / (b + c) }'
