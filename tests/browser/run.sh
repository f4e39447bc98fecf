#!/usr/bin/env bash
# Runs the browser end-to-end test in a private network namespace that has only loopback, so
# Chromium and the server talk 127.0.0.1 <-> 127.0.0.1 and no packet leaves the machine.
# Needs root (or unprivileged user namespaces) for `unshare -n`. Exits with the test's code.
#
#   bash tests/browser/run.sh                                  # uses target/debug/confab
#   CONFAB_BIN=target/release/confab bash tests/browser/run.sh
#   CONFAB_E2E_SCRIPT=connect_time.mjs bash tests/browser/run.sh   # the connect-time test instead
set -euo pipefail

cd "$(dirname "$0")/../.."

if [ "${CONFAB_E2E_IN_NETNS:-}" != 1 ]; then
  export CONFAB_E2E_IN_NETNS=1
  if [ "$(id -u)" = 0 ]; then
    exec unshare -n bash "$0" "$@"
  fi
  # Not root: a user namespace maps us to root inside, which may then make a network namespace.
  exec unshare -r -n bash "$0" "$@"
fi

ip link set lo up
# CONFAB_E2E_SCRIPT=connect_time.mjs runs another test of this directory in the same namespace.
script=${CONFAB_E2E_SCRIPT:-e2e.mjs}
case "$script" in
  */* | *[!A-Za-z0-9_.-]* | '') echo "run.sh: CONFAB_E2E_SCRIPT must name a .mjs file in tests/browser/, not '$script'" >&2; exit 2 ;;
esac
exec node "tests/browser/$script" "$@"
