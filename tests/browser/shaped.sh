#!/usr/bin/env bash
# Shaped-network browser test: three headless-Chromium processes, each in its own network
# namespace with its own link to the server's namespace, the server→browser direction of each
# link capped with tc tbf during the run (see netns.sh for the topology, shaped.mjs for the
# scenarios). Needs root. Exits with the test's code; the namespaces and everything running in
# them are removed on every exit path (normal end, failure, SIGINT, SIGTERM).
#
#   bash tests/browser/shaped.sh                          # uses target/debug/confab
#   CONFAB_BIN=target/release/confab bash tests/browser/shaped.sh
#   SHAPED_REPORT_ONLY=1 bash tests/browser/shaped.sh     # print the numbers, never fail on them
set -euo pipefail

cd "$(dirname "$0")/../.."
NETNS=tests/browser/netns.sh
BROWSERS=3

[ "$(id -u)" = 0 ] || { echo "shaped.sh: needs root (ip netns, tc)" >&2; exit 2; }
for cmd in ip tc node; do
  command -v "$cmd" >/dev/null || { echo "shaped.sh: '$cmd' not found (iproute2, node)" >&2; exit 2; }
done
[ -x /usr/bin/chromium ] || { echo "shaped.sh: /usr/bin/chromium not found (apt-get install chromium)" >&2; exit 2; }

bash "$NETNS" stale
# The namespaces carry this shell's pid, so parallel runs do not collide and `netns.sh stale`
# can tell leftovers of dead runs.
export SHAPED_NETNS_ID=confab-shaped-$$
export SHAPED_NETNS_SH=$PWD/$NETNS
export SHAPED_BROWSERS=$BROWSERS

child=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    # shaped.mjs closes its browsers and the server on SIGTERM; give it a moment.
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.2; done
  fi
  bash "$NETNS" down "$SHAPED_NETNS_ID"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$NETNS" up "$SHAPED_NETNS_ID" "$BROWSERS"
# Node runs beside the server in S (it reaches /healthz over S's own addresses); each browser is
# launched through a wrapper that enters its own namespace. Node runs in the background so a
# signal reaches the traps at once instead of after node ends.
ip netns exec "$SHAPED_NETNS_ID-s" node tests/browser/shaped.mjs "$@" &
child=$!
rc=0
wait "$child" || rc=$?
child=
exit "$rc"
