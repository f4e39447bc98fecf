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
. tests/browser/netns-run.sh
BROWSERS=2

netns_require lossy 'ip netns, nft' 'iproute2, nftables, node' ip nft node
# A relative LOSSY_JSON is relative to where the caller stood, not to the repository.
if [ -n "${LOSSY_JSON:-}" ]; then
  case "$LOSSY_JSON" in /*) ;; *) LOSSY_JSON=$OLDPWD/$LOSSY_JSON ;; esac
  export LOSSY_JSON
fi
# Exports LOSSY_NETNS_ID and LOSSY_NETNS_SH, runs lossy.mjs in the server's namespace.
netns_run lossy "$BROWSERS" tests/browser/lossy.mjs "$@"
