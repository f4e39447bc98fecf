#!/usr/bin/env bash
# Lossy-link browser test: two headless-Chromium processes (alice = b1, bob = b2), each in its own
# network namespace with its own link to the server's namespace; random UDP drops (nftables
# `numgen random`, see netns.sh) on bob's downlink, then on alice's uplink, phase by phase (see
# lossy.mjs). Needs root. Exits with the test's code; the namespaces and everything running in
# them are removed on every exit path (normal end, failure, SIGINT, SIGTERM).
#
#   bash tests/browser/lossy.sh                           # uses target/debug/confab, report only
#   LOSSY_ENFORCE=1 bash tests/browser/lossy.sh           # fail on every pass criterion
#   LOSSY_ENFORCE=video,freeze bash tests/browser/lossy.sh
#   LOSSY_PHASES=0,2,4 LOSSY_JSON=/tmp/lossy.json bash tests/browser/lossy.sh
#   CONFAB_BIN=target/release/confab bash tests/browser/lossy.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
NETNS=tests/browser/netns.sh
BROWSERS=2

[ "$(id -u)" = 0 ] || { echo "lossy.sh: needs root (ip netns, nft)" >&2; exit 2; }
for cmd in ip nft node; do
  command -v "$cmd" >/dev/null || { echo "lossy.sh: '$cmd' not found (iproute2, nftables, node)" >&2; exit 2; }
done
[ -x /usr/bin/chromium ] || { echo "lossy.sh: /usr/bin/chromium not found (apt-get install chromium)" >&2; exit 2; }

bash "$NETNS" stale
# The namespaces carry this shell's pid, so parallel runs do not collide and `netns.sh stale`
# can tell leftovers of dead runs.
export LOSSY_NETNS_ID=confab-lossy-$$
export LOSSY_NETNS_SH=$PWD/$NETNS
# A relative LOSSY_JSON is relative to where the caller stood, not to the repository.
if [ -n "${LOSSY_JSON:-}" ]; then
  case "$LOSSY_JSON" in /*) ;; *) LOSSY_JSON=$OLDPWD/$LOSSY_JSON ;; esac
  export LOSSY_JSON
fi

child=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    # lossy.mjs closes its browsers and the server on SIGTERM; give it a moment.
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.2; done
  fi
  bash "$NETNS" down "$LOSSY_NETNS_ID"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$NETNS" up "$LOSSY_NETNS_ID" "$BROWSERS"
# Node runs beside the server in S (it reaches /healthz and /metrics over S's own addresses, and
# the loss rules' counters are in S); each browser is launched through a wrapper that enters its
# own namespace. Node runs in the background so a signal reaches the traps at once.
ip netns exec "$LOSSY_NETNS_ID-s" node tests/browser/lossy.mjs "$@" &
child=$!
rc=0
wait "$child" || rc=$?
child=
exit "$rc"
