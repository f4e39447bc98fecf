# Launcher of the browser tests that run in netns.sh's namespaces (shaped.sh, lossy.sh,
# connectivity.sh): sourced by them, from the repository's root, under `set -euo pipefail`.
#
#   netns_require NAME NEEDS HINT CMD...
#       exits 2 (saying so as NAME.sh) unless this is root (NEEDS: what for), every CMD is on the
#       PATH (HINT: the packages) and /usr/bin/chromium exists
#   netns_run NAME BROWSERS SCRIPT [ARG...]
#       removes stale namespaces, creates <ID>-s and <ID>-b1..b<BROWSERS> (ID = confab-NAME-<pid of
#       this shell>), exports <NAME>_NETNS_ID=ID and <NAME>_NETNS_SH (netns.sh's path), NAME in
#       upper case (SHAPED_NETNS_ID, LOSSY_NETNS_ID, …), runs `node SCRIPT ARG...` in <ID>-s and
#       exits with its code; the namespaces and everything running in them are removed on every
#       exit path (normal end, failure, SIGINT, SIGTERM).

NETNS_RUN_SH=tests/browser/netns.sh

netns_require() {
  local name=$1 needs=$2 hint=$3 cmd
  shift 3
  [ "$(id -u)" = 0 ] || { echo "$name.sh: needs root ($needs)" >&2; exit 2; }
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || { echo "$name.sh: '$cmd' not found ($hint)" >&2; exit 2; }
  done
  [ -x /usr/bin/chromium ] || { echo "$name.sh: /usr/bin/chromium not found (apt-get install chromium)" >&2; exit 2; }
}

netns_run() {
  local name=$1 browsers=$2 script=$3 prefix=${1^^} rc
  shift 3
  bash "$NETNS_RUN_SH" stale
  # The namespaces carry this shell's pid, so parallel runs do not collide and `netns.sh stale`
  # can tell leftovers of dead runs.
  netns_run_id=confab-$name-$$
  export "${prefix}_NETNS_ID=$netns_run_id" "${prefix}_NETNS_SH=$PWD/$NETNS_RUN_SH"
  netns_run_child=
  trap netns_run_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  bash "$NETNS_RUN_SH" up "$netns_run_id" "$browsers"
  # Node runs beside the server in S (it reaches /healthz and /metrics over S's own addresses, and
  # netns.sh's tc and nft state is in S); each browser is launched through a wrapper that enters
  # its own namespace. Node runs in the background so a signal reaches the traps at once instead
  # of after node ends.
  ip netns exec "$netns_run_id-s" node "$script" "$@" &
  netns_run_child=$!
  rc=0
  wait "$netns_run_child" || rc=$?
  netns_run_child=
  exit "$rc"
}

netns_run_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$netns_run_child" ] && kill -0 "$netns_run_child" 2>/dev/null; then
    # The script closes its browsers and the server on SIGTERM; give it a moment.
    kill -TERM "$netns_run_child" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$netns_run_child" 2>/dev/null || break; sleep 0.2; done
  fi
  bash "$NETNS_RUN_SH" down "$netns_run_id"
  exit "$rc"
}
