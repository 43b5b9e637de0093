# shellcheck shell=bash
# Shared shell functions for deploy/*.sh. Source it; do not execute it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything here is safe under `set -euo pipefail`.

# Debian keeps the server binaries in /usr/sbin, which is not on every PATH.
case ":${PATH}:" in
  *:/usr/sbin:*) ;;
  *) PATH="${PATH}:/usr/sbin:/sbin" ;;
esac
export PATH

# The repository root (the parent of deploy/); used by the scripts that source this.
# shellcheck disable=SC2034
TRIBUTARY_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

log() { printf '%s: %s\n' "${TRIBUTARY_LOG_PREFIX:-tributary}" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# have_mariadb: every binary the scripts use is installed.
have_mariadb() {
  local b
  for b in mariadbd mariadb-install-db mariadb mariadb-admin; do
    command -v "$b" >/dev/null 2>&1 || return 1
  done
}

# ensure_mariadb_server: install Debian's mariadb-server (and client) when missing.
#
# Idempotent: does nothing when the binaries are there. Never starts, stops or
# configures a system-wide server: while apt-get runs, a policy-rc.d that
# denies every service start is put in place (unless one exists already), and
# a postinst that fails only because it could not start the service does not
# stop us as long as the binaries got installed.
ensure_mariadb_server() {
  have_mariadb && return 0
  [[ "$(id -u)" == 0 ]] || die "mariadb-server is not installed and we are not root: run 'apt-get install mariadb-server mariadb-client' as root"
  command -v apt-get >/dev/null 2>&1 || die "mariadb-server is not installed and apt-get is not available"
  local lock=/tmp/tributary-apt-install.lock fd
  exec {fd}>"$lock"
  flock -w 900 "$fd" || die "timed out waiting for $lock"
  if ! have_mariadb; then
    log "installing mariadb-server with apt-get (one time)"
    local policy=/usr/sbin/policy-rc.d ours=0 rc=0
    if [[ ! -e "$policy" ]]; then
      printf '#!/bin/sh\n# temporary, written by tributary deploy/lib.sh: start no service\nexit 101\n' >"$policy"
      chmod 0755 "$policy"
      ours=1
    fi
    {
      DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
          -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
          mariadb-server mariadb-client
    } >&2 || rc=$?
    ((ours)) && rm -f "$policy"
    if ((rc != 0)); then
      have_mariadb || die "apt-get install mariadb-server failed (exit $rc)"
      log "warning: apt-get exited $rc (a postinst that cannot start the system service, probably); the binaries are installed, continuing"
    fi
    have_mariadb || die "mariadb-server installed but mariadbd/mariadb-install-db/mariadb/mariadb-admin still not found"
  fi
  exec {fd}>&-
}

# shell_quote VALUE: VALUE as one shell word (bare when it is safe, else single-quoted).
shell_quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:@+,=%-]+$ ]]; then
    printf '%s' "$1"
  else
    local q="'\\''"
    printf "'%s'" "${1//\'/$q}"
  fi
}

# pid_is_mariadbd PID DATADIR: PID is alive and is the mariadbd serving DATADIR.
# (Guards against pid reuse: we only ever signal our own server.)
pid_is_mariadbd() {
  local pid="$1" datadir="$2" cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *mariadbd* && "$cmdline" == *"--datadir=$datadir "* ]]
}

# ensure_build_deps: what the bundled librdkafka build (rdkafka with the ssl feature) needs on
# a fresh Debian 12: a C/C++ toolchain, make, perl (librdkafka's mklove configure), pkg-config,
# zlib and OpenSSL headers. Installed with apt-get when missing.
ensure_build_deps() {
  local missing=() b p
  for b in cc c++ make perl pkg-config; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  for p in libssl-dev zlib1g-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  apt_install "build dependencies" "${missing[*]}" build-essential perl pkg-config libssl-dev zlib1g-dev
}

# ensure_test_tools: what the test suite uses beside the services: openssl (certificates for
# the Kafka TLS test), socat (the TLS front of the test broker), systemd-analyze (checks the
# units in deploy/systemd), promtool (Prometheus; checks deploy/compose's scrape configuration
# and alert rules), docker-compose (checks the compose file; no container engine is needed
# or installed), and chromium with chromedriver (the admin console's browser test). Installed
# with apt-get when missing; no service is started.
ensure_test_tools() {
  local missing=() packages=() pair b
  # command:package (systemd-analyze checks the systemd units in deploy/systemd; ip makes the
  # chaos suite's network namespaces)
  for pair in openssl:openssl socat:socat systemd-analyze:systemd promtool:prometheus \
    docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver ip:iproute2; do
    b="${pair%%:*}"
    command -v "$b" >/dev/null 2>&1 || { missing+=("$b"); packages+=("${pair#*:}"); }
  done
  ((${#missing[@]} == 0)) && return 0
  apt_install "test tools" "${missing[*]}" "${packages[@]}"
}

# apt_install WHAT MISSING PACKAGE...: installs PACKAGEs with apt-get (as root, one install at a
# time across concurrent runs), or dies naming WHAT is MISSING and the command to run.
apt_install() {
  local what="$1" missing="$2"
  shift 2
  [[ "$(id -u)" == 0 ]] || die "missing $what ($missing): run 'apt-get install $*' as root"
  command -v apt-get >/dev/null 2>&1 || die "missing $what ($missing) and apt-get is not available"
  local lock=/tmp/tributary-apt-install.lock fd
  exec {fd}>"$lock"
  flock -w 900 "$fd" || die "timed out waiting for $lock"
  log "installing $what with apt-get (one time): $missing"
  # Packages that ship a service (prometheus) must not start a system-wide one: a policy-rc.d
  # denies every start while apt-get runs (unless one exists already).
  local policy=/usr/sbin/policy-rc.d ours=0 rc=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# temporary, written by tributary deploy/lib.sh: start no service\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    ours=1
  fi
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
  } >&2 || rc=$?
  ((ours)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get install of the $what failed (exit $rc)"
  exec {fd}>&-
}

# ensure_tansu: the tansu broker (Kafka protocol, for the Kafka tests and benchmark) at
# $TANSU_BIN (default ~/.cargo/bin/tansu); installs it with cargo when missing (~9 minutes).
ensure_tansu() {
  TANSU_BIN="${TANSU_BIN:-${HOME:-/root}/.cargo/bin/tansu}"
  export TANSU_BIN
  [[ -x "$TANSU_BIN" ]] && return 0
  ensure_cargo
  local lock=/tmp/tributary-tansu-install.lock fd
  exec {fd}>"$lock"
  flock -w 1800 "$fd" || die "timed out waiting for $lock"
  if [[ ! -x "$TANSU_BIN" ]]; then
    log "installing tansu with cargo (one time, about 9 minutes)"
    cargo install tansu --locked --features dynostore >&2 || die "cargo install tansu failed"
    [[ -x "$TANSU_BIN" ]] || TANSU_BIN="$(command -v tansu)" || die "tansu installed but not found"
  fi
  exec {fd}>&-
}

# ensure_cargo: put cargo on PATH (rustup installs it under ~/.cargo/bin) or explain.
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
      PATH="${HOME:-/root}/.cargo/bin:$PATH"
      export PATH
    else
      die "cargo not found: install a Rust toolchain (rustup, Rust >= 1.89) and put cargo on PATH"
    fi
  fi
}

# A random loopback port in 20000..32767: below Linux's ephemeral range (32768+),
# so neither outgoing connections nor bind(0) elsewhere take it, and not listened on.
# ensure_free_disk DIR GIB: fail early, naming DIR, when its file system has less than GIB
# GiB free (a build that fills the disk fails later with a linker bus error instead).
ensure_free_disk() {
  local dir="$1" need_gib="$2" free_kib
  free_kib="$(df -Pk -- "$dir" | awk 'NR == 2 { print $4 }')"
  if [[ -n "$free_kib" ]] && ((free_kib < need_gib * 1024 * 1024)); then
    die "only $((free_kib / 1024 / 1024)) GiB free under $dir; the build and the test databases need about $need_gib GiB: free space there (cargo clean, old target directories) or set CARGO_TARGET_DIR to a larger disk"
  fi
}

pick_port() {
  local port hex i
  for ((i = 0; i < 50; i++)); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
    printf -v hex ':%04X ' "$port"
    if ! grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6; then
      printf '%s' "$port"
      return 0
    fi
  done
  die "no free port found"
}
