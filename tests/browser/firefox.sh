#!/usr/bin/env bash
# Firefox interop browser test: a headless Chromium (alice = b1, Playwright) and a headless Firefox
# (fox = b2, puppeteer-core over WebDriver BiDi), each in its own network namespace with its own
# link to the server's namespace (see netns.sh): a plain call, ICE-TCP with UDP blocked for
# Firefox, session resume after Firefox's WebSocket drops (see firefox.mjs). Needs root. Exits
# with the test's code; the namespaces and everything running in them are removed on every exit
# path (normal end, failure, SIGINT, SIGTERM).
#
#   bash tests/browser/firefox.sh                         # uses target/debug/confab
#   CONFAB_BIN=target/release/confab bash tests/browser/firefox.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
. tests/browser/netns-run.sh
BROWSERS=2

netns_require firefox 'ip netns, nft' 'iproute2, nftables, node' ip nft node
FIREFOX_BIN=${FIREFOX_BIN:-/usr/bin/firefox-esr}
[ -x "$FIREFOX_BIN" ] || { echo "firefox.sh: $FIREFOX_BIN not found (apt-get install firefox-esr)" >&2; exit 2; }
[ -d node_modules/puppeteer-core ] || { echo "firefox.sh: node_modules/puppeteer-core not found (npm ci)" >&2; exit 2; }
export FIREFOX_BIN
# Exports FIREFOX_NETNS_ID and FIREFOX_NETNS_SH, runs firefox.mjs in the server's namespace.
netns_run firefox "$BROWSERS" tests/browser/firefox.mjs "$@"
