#!/usr/bin/env bash
# TURN browser test: a real coturn (Debian package `coturn`, `use-auth-secret`) in its own
# network namespace, Confab handing out short-lived credentials derived from the shared secret,
# alice's Chromium with iceTransportPolicy 'relay' (`?relay=1`): her media must go through the
# TURN server; bob connects directly. Also checks (tests/interop/turn_credentials.py, aioice's
# TURN client) that coturn accepts the minted credentials and refuses a forged or expired one.
# Needs root. Namespaces (netns.sh): b1 alice, b2 bob, b3 coturn.
#
#   bash tests/browser/turn.sh
#   CONFAB_BIN=target/release/confab bash tests/browser/turn.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
. tests/browser/netns-run.sh

netns_require turn 'ip netns' 'iproute2, coturn, python3 + pip (aiortc), node' ip turnserver python3 node
. tests/interop/python-deps.sh
python_deps
netns_run turn 3 tests/browser/turn.mjs "$@"
