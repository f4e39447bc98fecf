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
. tests/browser/netns-run.sh
BROWSERS=3

netns_require shaped 'ip netns, tc' 'iproute2, node' ip tc node
export SHAPED_BROWSERS=$BROWSERS
# Exports SHAPED_NETNS_ID and SHAPED_NETNS_SH, runs shaped.mjs in the server's namespace.
netns_run shaped "$BROWSERS" tests/browser/shaped.mjs "$@"
