#!/usr/bin/env bash
# A private tansu broker (Kafka protocol) for tests and benchmarks, as a separate process:
#
#   deploy/tansu.sh start DIR [--advertise PORT]
#                                 start tansu on a free loopback port; DIR (created empty)
#                                 is its working directory; writes DIR/env (BROKERS=...,
#                                 PORT=..., PID=...) and prints the path of DIR/env.
#                                 --advertise: clients are told 127.0.0.1:PORT (a proxy)
#   deploy/tansu.sh stop DIR      stop the tansu started in DIR (idempotent)
#   deploy/tansu.sh status DIR    exit 0 when it runs
#
# Storage is memory://tansu/ (everything is lost when it stops); it listens and advertises
# 127.0.0.1 only. tansu does not create topics on its own: create them with the admin API
# (`tributary kafka init`) or `tansu topic create`. Installs tansu with
# `cargo install tansu --locked --features dynostore` when it is missing (about 9 minutes once).
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="tansu.sh"

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

# pid_is_tansu PID DIR: PID is alive and is the tansu whose working directory is DIR.
pid_is_tansu() {
  local pid="$1" dir="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tansu' || return 1
  [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$dir" ]]
}

start() {
  local dir="$1" advertise="${2:-}"
  ensure_tansu
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd -P)"
  if [[ -f "$dir/env" ]] && pid_is_tansu "$(sed -n 's/^PID=//p' "$dir/env")" "$dir"; then
    die "a tansu already runs in $dir; stop it first"
  fi
  # An empty working directory: tansu reads a .env file from it.
  find "$dir" -mindepth 1 -delete
  local port attempt pid
  for ((attempt = 0; attempt < 5; attempt++)); do
    port="$(pick_port)"
    (
      cd "$dir"
      exec setsid "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:${advertise:-$port}" \
        --storage-engine memory://tansu/ \
        </dev/null >>"$dir/tansu.log" 2>&1
    ) &
    pid=$!
    local i
    for ((i = 0; i < 300; i++)); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        {
          echo "BROKERS=127.0.0.1:$port"
          echo "PORT=$port"
          echo "PID=$pid"
          echo "OWNER_PID=${TRIBUTARY_OWNER_PID:-$PPID}"
          echo "TRIBUTARY_TEST_RUN_ID=${TRIBUTARY_TEST_RUN_ID:-}"
        } >"$dir/env"
        echo "$dir/env"
        return 0
      fi
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    log "tansu did not listen on port $port (attempt $((attempt + 1))); log: $dir/tansu.log"
  done
  die "tansu did not start; see $dir/tansu.log"
}

stop() {
  local dir="$1" pid i
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd -P)"
  [[ -f "$dir/env" ]] || return 0
  pid="$(sed -n 's/^PID=//p' "$dir/env")"
  if pid_is_tansu "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_is_tansu "$pid" "$dir" || break
      sleep 0.1
    done
    if pid_is_tansu "$pid" "$dir"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$dir/env"
}

status() {
  local dir="$1"
  dir="$(cd "$dir" 2>/dev/null && pwd -P)" || return 1
  [[ -f "$dir/env" ]] && pid_is_tansu "$(sed -n 's/^PID=//p' "$dir/env")" "$dir"
}

case "${1:-}" in
  start)
    if [[ $# -eq 4 && "$3" == "--advertise" && "$4" =~ ^[0-9]+$ ]]; then
      start "$2" "$4"
    else
      [[ $# -eq 2 ]] || usage 2
      start "$2"
    fi
    ;;
  stop | status)
    [[ $# -eq 2 ]] || usage 2
    "$1" "$2"
    ;;
  install) ensure_tansu ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 ;;
esac
