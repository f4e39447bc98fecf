#!/usr/bin/env bash
# Connectivity browser test: three headless-Chromium processes (alice = b1, bob = b2, carol = b3),
# each in its own network namespace with its own link to the server's namespace (see netns.sh):
# ICE-TCP with UDP blocked, ICE restart after an address change, session resume after the
# WebSocket drops, no reconnect storm when media can never connect (see connectivity.mjs). Needs
# root. Exits with the test's code; the namespaces and everything running in them are removed on
# every exit path (normal end, failure, SIGINT, SIGTERM).
#
#   bash tests/browser/connectivity.sh                    # uses target/debug/confab
#   CONNECTIVITY_PHASES=1,3 bash tests/browser/connectivity.sh
#   CONFAB_BIN=target/release/confab bash tests/browser/connectivity.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
. tests/browser/netns-run.sh
BROWSERS=3

netns_require connectivity 'ip netns, nft' 'iproute2, nftables, node' ip nft node
# Exports CONNECTIVITY_NETNS_ID and CONNECTIVITY_NETNS_SH, runs connectivity.mjs in the server's namespace.
netns_run connectivity "$BROWSERS" tests/browser/connectivity.mjs "$@"
