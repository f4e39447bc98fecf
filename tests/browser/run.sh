#!/usr/bin/env bash
# Runs the browser end-to-end test in a private network namespace that has only loopback, so
# Chromium and the server talk 127.0.0.1 <-> 127.0.0.1 and no packet leaves the machine.
# Needs root (or unprivileged user namespaces) for `unshare -n`. Exits with the test's code.
#
#   bash tests/browser/run.sh                                  # uses target/debug/confab
#   CONFAB_BIN=target/release/confab bash tests/browser/run.sh
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
exec node tests/browser/e2e.mjs "$@"
