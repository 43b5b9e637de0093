#!/usr/bin/env bash
# Start and stop private MariaDB instances for Tributary's development and tests.
# Run `deploy/mariadb.sh --help` for the usage.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIBUTARY_LOG_PREFIX="mariadb.sh"

usage() {
  cat <<'EOF'
deploy/mariadb.sh: private MariaDB instances (a clinic "site" or the "hq") for Tributary.

Every instance lives in its own directory, listens on 127.0.0.1 only and never touches
a system-wide MariaDB server. Database `openmrs` comes preloaded with the OpenMRS 2.8
core schema and data from deploy/fixtures/openmrs-2.8/ (117 tables, 540 rows).

USAGE
  deploy/mariadb.sh start DIR --role site|hq [--server-id N] [--openmrs VERSION]
                           [-- MARIADBD-OPTION...]
      Start an instance in DIR (created if missing) and print its settings (the same
      KEY=VALUE lines as DIR/env). When DIR already holds a stopped instance, start it
      again on the same data, port, password and server id (--role may be omitted).
      --openmrs loads another core schema version from deploy/fixtures/openmrs-VERSION/
      instead of 2.8 (2.6, 2.7 and 3.0 are there: sites on older or newer OpenMRS).
      Options after `--` go to mariadbd last, so they override ours, e.g.
        deploy/mariadb.sh start /tmp/bad-site --role site -- --binlog-row-image=MINIMAL
      (they are remembered for restarts of the same DIR).
  deploy/mariadb.sh stop DIR
      Graceful shutdown (SIGTERM), SIGKILL after a deadline. No instance: exit 0.
  deploy/mariadb.sh stop-all ROOT [--run-id ID | --orphans]
      Stop every instance whose DIR/env is below ROOT; --run-id only those started
      under TRIBUTARY_TEST_RUN_ID=ID, --orphans only those whose starting process is gone.
  deploy/mariadb.sh status DIR
      Print DIR/env; exit 0 when the instance runs, 3 when it does not.
  deploy/mariadb.sh sql DIR [MARIADB-CLIENT-ARGS...]
      Run the mariadb client as the server's root over the unix socket, database openmrs:
        deploy/mariadb.sh sql DIR -e 'SHOW BINARY LOGS'

ROLES
  site  a clinic database: the binlog the replicator reads. log_bin, binlog_format=ROW,
        binlog_row_image=FULL, binlog_row_metadata=FULL, binlog_checksum=CRC32,
        log_bin_compress=OFF, gtid_strict_mode=ON. The binlog is reset after the fixture
        load (RESET MASTER), so it holds only what happens after start.
  hq    the central database. Same settings (a binlog at HQ is harmless), also reset.
  Both: utf8mb4 / utf8mb4_general_ci, innodb_buffer_pool_size=128M, and, for test speed,
  innodb_flush_log_at_trx_commit=2, sync_binlog=0, innodb_doublewrite=0.

DIR/env (shell-sourceable; note that sourcing it sets USER) and stdout
  ROLE PORT HOST SOCKET PID SERVER_ID DATABASE USER PASSWORD_FILE DATADIR LOG
  BINLOG_BASENAME DIR VERSION RUN_ID OWNER_PID
  User `tributary` (@127.0.0.1 and @localhost) has a random password in DIR/password
  (mode 0600, no trailing newline) and ALL PRIVILEGES WITH GRANT OPTION: this is a local
  dev/test instance. Production grants are narrower: REPLICATION SLAVE, REPLICATION
  CLIENT and SELECT at the site.

SPEED
  The first start builds a template datadir (mariadb-install-db + fixture load, about a
  second) under $TRIBUTARY_SERVICES_CACHE (default <repo>/target/tributary-services/templates),
  keyed by the fixtures' and mariadbd's hash and guarded by flock. Later starts copy it.

ENVIRONMENT
  TRIBUTARY_SERVICES_CACHE        template cache directory (see above)
  TRIBUTARY_MARIADB_START_TIMEOUT seconds to wait for readiness (default 120)
  TRIBUTARY_MARIADB_STOP_TIMEOUT  seconds to wait for a graceful shutdown (default 60)
  TRIBUTARY_TEST_RUN_ID           recorded as RUN_ID (deploy/test.sh sets it)

If mariadb-server is not installed, `start` installs it with apt-get (as root), without
starting the system service.
EOF
}

FIXTURES="${TRIBUTARY_REPO_ROOT}/deploy/fixtures/openmrs-2.8"
CACHE="${TRIBUTARY_SERVICES_CACHE:-${TRIBUTARY_REPO_ROOT}/target/tributary-services/templates}"
START_TIMEOUT="${TRIBUTARY_MARIADB_START_TIMEOUT:-120}"
STOP_TIMEOUT="${TRIBUTARY_MARIADB_STOP_TIMEOUT:-60}"
# Bump when the template's content or layout changes.
TEMPLATE_FORMAT=1
DATABASE=openmrs
APP_USER=tributary

# Options shared by the template build and every instance. Those that shape the
# on-disk files (e.g. the redo log size) are part of the template key.
common_opts() {
  COMMON=(--no-defaults)
  [[ "$(id -u)" == 0 ]] && COMMON+=(--user=root)
  COMMON+=(
    --character-set-server=utf8mb4
    --collation-server=utf8mb4_general_ci
    --innodb-buffer-pool-size=128M
    --innodb-log-file-size=32M
    --innodb-undo-tablespaces=2
    --innodb-flush-log-at-trx-commit=2
    --innodb-doublewrite=0
    --innodb-buffer-pool-dump-at-shutdown=0
    --innodb-buffer-pool-load-at-startup=0
    --skip-name-resolve
  )
}

# The account the mariadb client uses over the socket (unix_socket authentication).
socket_user() {
  if [[ "$(id -u)" == 0 ]]; then printf root; else id -un; fi
}

# A unix socket path must fit in sun_path (108 bytes): use DIR/mysqld.sock when it
# does, else a short, DIR-specific path in /tmp.
socket_path() {
  local p="$1/mysqld.sock"
  if ((${#p} <= 100)); then
    printf '%s' "$p"
  else
    printf '/tmp/tributary-mariadb-%s.sock' "$(printf '%s' "$1" | sha256sum | cut -c1-16)"
  fi
}

# alive PID: the process exists and is not a zombie.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ -n "$stat" && "${stat:0:1}" != Z ]]
}

# env_get FILE KEY: the value of KEY in a DIR/env file (sourced in a subshell).
env_get() {
  (
    set +u
    # shellcheck disable=SC1090
    source "$1"
    printf '%s' "${!2-}"
  )
}

client() { # client SOCKET [args...]
  local sock="$1"
  shift
  mariadb --no-defaults --socket="$sock" --user="$(socket_user)" --batch --skip-column-names "$@"
}

ping_server() { mariadb-admin --no-defaults --socket="$1" --user="$(socket_user)" --connect-timeout=2 ping >/dev/null 2>&1; }

# Set by launch(); read by the EXIT trap.
LAUNCHED_PID=""
LAUNCHED_LOG=""
CLEANUP_PATHS=()

on_exit() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    if [[ -n "$LAUNCHED_PID" ]] && alive "$LAUNCHED_PID"; then
      log "failed (exit $rc): stopping the mariadbd we started (pid $LAUNCHED_PID)"
      kill -TERM "$LAUNCHED_PID" 2>/dev/null || true
      wait_gone "$LAUNCHED_PID" 20 || kill -KILL "$LAUNCHED_PID" 2>/dev/null || true
      wait_gone "$LAUNCHED_PID" 10 || true
    fi
    if [[ -n "$LAUNCHED_LOG" && -s "$LAUNCHED_LOG" ]]; then
      {
        echo "----- last lines of $LAUNCHED_LOG -----"
        tail -n 40 "$LAUNCHED_LOG"
        echo "-----"
      } >&2
    fi
    local p
    for p in "${CLEANUP_PATHS[@]}"; do rm -rf -- "$p"; done
  fi
  exit "$rc"
}

# wait_gone PID SECONDS: wait (polling) until PID is gone; false on timeout.
wait_gone() {
  local deadline=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# launch LOG SOCKET MARIADBD-ARGS...: start mariadbd in the background and wait
# until it answers on SOCKET. Returns 0 when ready, 2 when it could not bind its
# TCP port (the caller may retry with another port), 1 on any other failure.
launch() {
  local log="$1" sock="$2"
  shift 2
  local offset=0
  [[ -f "$log" ]] && offset="$(stat -c %s "$log")"
  LAUNCHED_LOG="$log"
  mariadbd "$@" </dev/null >>"$log" 2>&1 &
  LAUNCHED_PID=$!
  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! alive "$LAUNCHED_PID"; then
      wait "$LAUNCHED_PID" 2>/dev/null || true
      if tail -c "+$((offset + 1))" "$log" 2>/dev/null | grep -qE "Bind on TCP/IP port|Address already in use"; then
        LAUNCHED_PID=""
        return 2
      fi
      log "mariadbd exited during startup"
      LAUNCHED_PID=""
      return 1
    fi
    if [[ -S "$sock" ]] && ping_server "$sock"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "mariadbd did not answer within ${START_TIMEOUT}s"
      return 1
    fi
    sleep 0.05
  done
}

# stop_pid PID DATADIR: graceful stop of our mariadbd, SIGKILL after STOP_TIMEOUT.
stop_pid() {
  local pid="$1" datadir="$2"
  pid_is_mariadbd "$pid" "$datadir" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
    log "mariadbd $pid did not stop within ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "mariadbd $pid survived SIGKILL"
  fi
}

fixture_files() {
  local f
  for f in schema.sql data.sql; do
    [[ -f "$FIXTURES/$f" ]] || die "missing fixture $FIXTURES/$f"
  done
}

template_key() {
  common_opts
  {
    printf 'format=%s\n' "$TEMPLATE_FORMAT"
    mariadbd --version
    printf '%s\n' "${COMMON[@]}"
    sha256sum <"$FIXTURES/schema.sql"
    sha256sum <"$FIXTURES/data.sql"
  } | sha256sum | cut -c1-16
}

# ensure_template: sets TEMPLATE_DIR to a complete template directory (with data/),
# building it under an flock when missing. (Not run in $(...): the EXIT trap must
# see what it starts.)
TEMPLATE_DIR=""
ensure_template() {
  fixture_files
  local key dir fd
  key="$(template_key)"
  dir="$CACHE/$key"
  TEMPLATE_DIR="$dir"
  if [[ -f "$dir/complete" ]]; then
    return 0
  fi
  mkdir -p "$CACHE"
  exec {fd}>"$CACHE/$key.lock"
  flock -w 900 "$fd" || die "timed out waiting for the template lock $CACHE/$key.lock"
  if [[ ! -f "$dir/complete" ]]; then
    build_template "$dir"
  fi
  exec {fd}>&-
}

build_template() {
  local dir="$1" tmp="$1.tmp.$$" t0=$SECONDS
  log "building template $dir (mariadb-install-db + OpenMRS fixtures; once per fixture version)"
  rm -rf -- "$dir" "$dir".tmp.*
  CLEANUP_PATHS+=("$tmp")
  mkdir -p "$tmp"
  local auth=(--auth-root-authentication-method=socket --auth-root-socket-user="$(socket_user)")
  local iu=()
  [[ "$(id -u)" == 0 ]] && iu=(--user=root)
  # Undo logs in their own (truncatable) files keep ibdata1 at 12M; without them the
  # schema load grows it to ~76M, which every instance would copy.
  if ! mariadb-install-db --no-defaults "${iu[@]}" --datadir="$tmp/data" --skip-test-db \
    --skip-name-resolve "${auth[@]}" --innodb-log-file-size=32M --innodb-undo-tablespaces=2 \
    >"$tmp/install.log" 2>&1; then
    tail -n 30 "$tmp/install.log" >&2
    die "mariadb-install-db failed"
  fi
  common_opts
  local sock
  sock="$(socket_path "$tmp")"
  local rc=0
  launch "$tmp/error.log" "$sock" "${COMMON[@]}" --datadir="$tmp/data" --socket="$sock" \
    --pid-file="$tmp/mariadbd.pid" --log-error="$tmp/error.log" --skip-networking --skip-log-bin || rc=$?
  ((rc == 0)) || die "could not start mariadbd for the template"
  client "$sock" -e "CREATE DATABASE \`$DATABASE\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci" ||
    die "CREATE DATABASE failed"
  client "$sock" --database="$DATABASE" <"$FIXTURES/schema.sql" || die "loading $FIXTURES/schema.sql failed"
  client "$sock" --database="$DATABASE" <"$FIXTURES/data.sql" || die "loading $FIXTURES/data.sql failed"
  local tables
  tables="$(client "$sock" -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='$DATABASE'")"
  # A clean shutdown, so that copies start without crash recovery.
  client "$sock" -e "SET GLOBAL innodb_fast_shutdown=0" || true
  kill -TERM "$LAUNCHED_PID"
  wait_gone "$LAUNCHED_PID" "$STOP_TIMEOUT" || die "template mariadbd did not shut down"
  wait "$LAUNCHED_PID" || die "template mariadbd exited with an error"
  LAUNCHED_PID=""
  rm -f "$tmp/data/ib_buffer_pool"
  printf 'tables=%s\nbuilt=%s\n' "$tables" "$(date -u +%FT%TZ)" >"$tmp/complete"
  sync -f "$tmp/data" 2>/dev/null || true
  mv -T "$tmp" "$dir"
  CLEANUP_PATHS=()
  log "template ready: $tables tables in $((SECONDS - t0))s"
}

# native_password_hash PASSWORD: what PASSWORD('...') returns for mysql_native_password:
# '*' + upper hex of SHA1(SHA1(password)).
native_password_hash() {
  local h1 esc=""
  h1="$(printf '%s' "$1" | sha1sum | cut -c1-40)"
  local i
  for ((i = 0; i < 40; i += 2)); do esc+="\\x${h1:i:2}"; done
  # shellcheck disable=SC2059
  printf '*%s' "$(printf "$esc" | sha1sum | cut -c1-40 | tr a-f A-F)"
}

random_password() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

cmd_start() {
  local dir="" role="" server_id="" openmrs="" extra=() have_extra=0
  while (($#)); do
    case "$1" in
      --role) role="${2:?--role needs site or hq}"; shift 2 ;;
      --role=*) role="${1#--role=}"; shift ;;
      --server-id) server_id="${2:?--server-id needs a number}"; shift 2 ;;
      --server-id=*) server_id="${1#--server-id=}"; shift ;;
      --openmrs) openmrs="${2:?--openmrs needs a version}"; shift 2 ;;
      --openmrs=*) openmrs="${1#--openmrs=}"; shift ;;
      --) shift; extra=("$@"); have_extra=1; break ;;
      -h | --help) usage; exit 0 ;;
      -*) die "start: unknown option $1 (see --help)" ;;
      *) [[ -z "$dir" ]] || die "start: more than one DIR given"; dir="$1"; shift ;;
    esac
  done
  [[ -n "$dir" ]] || die "start: DIR is required (see --help)"
  if [[ -n "$openmrs" ]]; then
    [[ "$openmrs" =~ ^[0-9]+\.[0-9]+$ && -d "${TRIBUTARY_REPO_ROOT}/deploy/fixtures/openmrs-$openmrs" ]] ||
      die "start: no fixtures for OpenMRS '$openmrs' (deploy/fixtures/openmrs-*/ has them)"
    FIXTURES="${TRIBUTARY_REPO_ROOT}/deploy/fixtures/openmrs-$openmrs"
  fi
  [[ -z "$server_id" || "$server_id" =~ ^[1-9][0-9]{0,9}$ ]] || die "start: --server-id must be a positive integer"
  if [[ ! -d "$dir/data" ]]; then
    case "$role" in
      site | hq) ;;
      "") die "start: --role site|hq is required" ;;
      *) die "start: --role must be site or hq, not '$role'" ;;
    esac
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd -P)"

  local fresh=1 port="" password=""
  if [[ -d "$dir/data" ]]; then
    [[ -f "$dir/env" ]] || die "$dir/data exists but $dir/env does not: not an instance made by this script (remove it)"
    fresh=0
    local old_pid old_role
    old_pid="$(env_get "$dir/env" PID)"
    if pid_is_mariadbd "$old_pid" "$dir/data"; then
      die "an instance is already running in $dir (pid $old_pid); stop it first"
    fi
    old_role="$(env_get "$dir/env" ROLE)"
    [[ -z "$role" || "$role" == "$old_role" ]] || die "$dir holds a $old_role instance, not $role"
    role="$old_role"
    port="$(env_get "$dir/env" PORT)"
    [[ -n "$server_id" ]] || server_id="$(env_get "$dir/env" SERVER_ID)"
    if ((!have_extra)) && [[ -f "$dir/mariadbd.args" ]]; then
      mapfile -t extra <"$dir/mariadbd.args"
    fi
  fi
  case "$role" in
    site | hq) ;;
    "") die "start: --role site|hq is required" ;;
    *) die "start: --role must be site or hq, not '$role'" ;;
  esac

  ensure_mariadb_server
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local t0=$SECONDS
  if ((fresh)); then
    ensure_template
    CLEANUP_PATHS+=("$dir/data" "$dir/binlog" "$dir/password" "$dir/env" "$dir/mariadbd.args")
    rm -rf -- "$dir/data.tmp"
    cp -a --reflink=auto "$TEMPLATE_DIR/data" "$dir/data.tmp"
    mv -T "$dir/data.tmp" "$dir/data"
  fi
  if ((${#extra[@]})); then printf '%s\n' "${extra[@]}"; fi >"$dir/mariadbd.args"
  mkdir -p "$dir/binlog"

  local sock log="$dir/error.log" pidfile="$dir/mariadbd.pid"
  sock="$(socket_path "$dir")"
  rm -f -- "$pidfile"
  common_opts
  local attempt rc
  for ((attempt = 1; ; attempt++)); do
    if ((fresh)); then port="$(pick_port)"; fi
    # Default server id: the port, unique among the instances running on this machine.
    local sid="${server_id:-$port}"
    rc=0
    # Each instance has its own temporary directory: a shared /tmp is cleaned by others.
    mkdir -p "$dir/tmp"
    launch "$log" "$sock" "${COMMON[@]}" \
      --datadir="$dir/data" --tmpdir="$dir/tmp" --socket="$sock" --pid-file="$pidfile" \
      --log-error="$log" \
      --bind-address=127.0.0.1 --port="$port" \
      --server-id="$sid" \
      --log-bin="$dir/binlog/mysql-bin" --log-bin-index="$dir/binlog/mysql-bin.index" \
      --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
      --binlog-checksum=CRC32 --log-bin-compress=OFF --gtid-strict-mode=ON --sync-binlog=0 \
      "${extra[@]}" || rc=$?
    if ((rc == 0)); then
      server_id="$sid"
      break
    fi
    if ((rc == 2 && fresh && attempt < 8)); then
      log "port $port is taken; retrying with another port"
      continue
    fi
    ((rc == 2)) && die "mariadbd could not bind 127.0.0.1:$port"
    die "mariadbd did not start"
  done

  if ((fresh)); then
    password="$(random_password)"
    # ALL PRIVILEGES because this is a local dev/test instance (tests create and drop
    # tables, change settings, ...). Production grants are narrower: REPLICATION SLAVE,
    # REPLICATION CLIENT and SELECT at the site; DML on the replicated tables at HQ.
    local h hash
    hash="$(native_password_hash "$password")"
    {
      for h in 127.0.0.1 localhost; do
        # By hash, so that the password is in no statement (nor in a client error message).
        printf "CREATE USER '%s'@'%s' IDENTIFIED BY PASSWORD '%s';\n" "$APP_USER" "$h" "$hash"
        printf "GRANT ALL PRIVILEGES ON *.* TO '%s'@'%s' WITH GRANT OPTION;\n" "$APP_USER" "$h"
      done
      # The fixtures were loaded without a binlog; drop the user statements above
      # too, so the binlog starts empty: the replicator streams only later changes.
      printf 'RESET MASTER;\n'
    } | client "$sock" || die "creating user $APP_USER / RESET MASTER failed"
    (
      umask 077
      printf '%s' "$password" >"$dir/password.tmp"
    )
    chmod 0600 "$dir/password.tmp"
    mv -f "$dir/password.tmp" "$dir/password"
  fi

  local version
  version="$(client "$sock" -e 'SELECT VERSION()')"
  local k v envtext=""
  for k in ROLE PORT HOST SOCKET PID SERVER_ID DATABASE USER PASSWORD_FILE DATADIR LOG BINLOG_BASENAME DIR VERSION RUN_ID OWNER_PID; do
    case "$k" in
      ROLE) v="$role" ;;
      PORT) v="$port" ;;
      HOST) v=127.0.0.1 ;;
      SOCKET) v="$sock" ;;
      PID) v="$LAUNCHED_PID" ;;
      SERVER_ID) v="$server_id" ;;
      DATABASE) v="$DATABASE" ;;
      USER) v="$APP_USER" ;;
      PASSWORD_FILE) v="$dir/password" ;;
      DATADIR) v="$dir/data" ;;
      LOG) v="$log" ;;
      BINLOG_BASENAME) v="$dir/binlog/mysql-bin" ;;
      DIR) v="$dir" ;;
      VERSION) v="$version" ;;
      RUN_ID) v="${TRIBUTARY_TEST_RUN_ID:-}" ;;
      OWNER_PID) v="$PPID" ;;
    esac
    envtext+="$k=$(shell_quote "$v")"$'\n'
  done
  printf '%s' "$envtext" >"$dir/env.tmp"
  mv -f "$dir/env.tmp" "$dir/env"
  CLEANUP_PATHS=()
  printf '%s' "$envtext"
  log "$role instance up in $((SECONDS - t0))s: 127.0.0.1:$port, server_id $server_id, dir $dir"
}

stop_dir() { # stop_dir DIR
  local dir="$1" pid datadir sock
  [[ -f "$dir/env" ]] || return 0
  pid="$(env_get "$dir/env" PID)"
  datadir="$(env_get "$dir/env" DATADIR)"
  sock="$(env_get "$dir/env" SOCKET)"
  stop_pid "$pid" "$datadir"
  # mariadbd removes its socket on a clean shutdown; not after SIGKILL.
  if [[ -S "$sock" ]] && ! ping_server "$sock"; then rm -f -- "$sock"; fi
}

cmd_stop() {
  (($# == 1)) || die "usage: deploy/mariadb.sh stop DIR"
  [[ -d "$1" ]] || return 0
  stop_dir "$(cd "$1" && pwd -P)"
}

cmd_stop_all() {
  local root="" run_id="" orphans=0
  while (($#)); do
    case "$1" in
      --run-id) run_id="${2:?--run-id needs a value}"; shift 2 ;;
      --run-id=*) run_id="${1#--run-id=}"; shift ;;
      --orphans) orphans=1; shift ;;
      -*) die "stop-all: unknown option $1" ;;
      *) root="$1"; shift ;;
    esac
  done
  [[ -n "$root" ]] || die "usage: deploy/mariadb.sh stop-all ROOT [--run-id ID | --orphans]"
  [[ -d "$root" ]] || return 0
  local envf d pids=() n=0
  while IFS= read -r -d '' envf; do
    d="$(dirname "$envf")"
    [[ -d "$d/data" ]] || continue
    if [[ -n "$run_id" && "$(env_get "$envf" RUN_ID)" != "$run_id" ]]; then continue; fi
    if ((orphans)) && alive "$(env_get "$envf" OWNER_PID)"; then continue; fi
    stop_dir "$d" &
    pids+=($!)
    n=$((n + 1))
  done < <(find "$root" -mindepth 2 -maxdepth 4 -name env -type f -print0 2>/dev/null)
  local p rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

cmd_status() {
  (($# == 1)) || die "usage: deploy/mariadb.sh status DIR"
  local dir="$1"
  [[ -f "$dir/env" ]] || { log "no instance in $dir"; exit 3; }
  cat "$dir/env"
  if pid_is_mariadbd "$(env_get "$dir/env" PID)" "$(env_get "$dir/env" DATADIR)"; then
    echo "STATUS=running"
  else
    echo "STATUS=stopped"
    exit 3
  fi
}

cmd_sql() {
  (($# >= 1)) || die "usage: deploy/mariadb.sh sql DIR [mariadb client args...]"
  local dir="$1"
  shift
  [[ -f "$dir/env" ]] || die "no instance in $dir"
  exec mariadb --no-defaults --socket="$(env_get "$dir/env" SOCKET)" --user="$(socket_user)" \
    --database="$(env_get "$dir/env" DATABASE)" "$@"
}

main() {
  (($#)) || { usage >&2; exit 2; }
  local cmd="$1"
  shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    stop-all) cmd_stop_all "$@" ;;
    status) cmd_status "$@" ;;
    sql) cmd_sql "$@" ;;
    -h | --help | help) usage ;;
    *) log "unknown command '$cmd'"; usage >&2; exit 2 ;;
  esac
}

main "$@"
