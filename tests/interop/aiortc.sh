#!/usr/bin/env bash
# Interop with aiortc (PyPI; a WebRTC stack we did not write): Confab in one network namespace,
# aiortc in another, joined by a veth pair (aiortc never offers loopback candidates). aiortc
# joins a room 20 times in a row; every join must connect (ICE + DTLS), and the time from
# opening the WebSocket to `connected` is printed (p50/p95). Needs root; installs aiortc and
# websockets with pip when missing. Nothing leaves the namespaces this script creates.
#
#   bash tests/interop/aiortc.sh                  # target/debug/confab
#   AIORTC_ENFORCE=0.3 bash tests/interop/aiortc.sh   # also fail if p50/p95 > 0.3 s
#   CONFAB_BIN=target/release/confab AIORTC_JOINS=50 bash tests/interop/aiortc.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${CONFAB_BIN:-target/debug/confab}
JOINS=${AIORTC_JOINS:-20}
[ -x "$BIN" ] || { echo "aiortc.sh: $BIN not built (cargo build)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "aiortc.sh: needs root (network namespaces)" >&2; exit 2; }
. tests/interop/python-deps.sh
python_deps

id=confab-aiortc-$$
s=$id-s c=$id-c
log=$(mktemp -d)/server.log
cleanup() {
  for ns in "$s" "$c"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM
ip netns add "$s"
ip netns add "$c"
ip -n "$s" link set lo up
ip -n "$c" link set lo up
ip -n "$s" link add vs type veth peer name vc netns "$c"
ip -n "$s" addr add 10.98.0.1/24 dev vs
ip -n "$c" addr add 10.98.0.2/24 dev vc
ip -n "$s" link set vs up
ip -n "$c" link set vc up

ip netns exec "$s" env CONFAB_HTTP__BIND=10.98.0.1:8080 CONFAB_MEDIA__BIND=10.98.0.1:50000 \
  CONFAB_MEDIA__TCP_BIND=10.98.0.1:50000 RUST_LOG=info "$BIN" serve >"$log" 2>&1 &
for _ in $(seq 100); do
  ip netns exec "$c" python3 -c 'import urllib.request; urllib.request.urlopen("http://10.98.0.1:8080/healthz", timeout=1)' 2>/dev/null && break
  sleep 0.1
done
args=(ws://10.98.0.1:8080/ws --joins "$JOINS")
[ -n "${AIORTC_ENFORCE:-}" ] && args+=(--enforce "$AIORTC_ENFORCE")
if ! ip netns exec "$c" python3 tests/interop/aiortc_connect.py "${args[@]}"; then
  echo "aiortc.sh: FAILED; server log tail ($log):" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
