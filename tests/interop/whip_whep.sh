#!/usr/bin/env bash
# WHIP/WHEP interop with clients we did not write: Confab in one network namespace, the clients in
# another, joined by a veth pair (libnice and aiortc offer no loopback candidates). Nothing leaves
# the namespaces this script creates; they and everything running in them are removed on every
# exit path (end, failure, SIGINT, SIGTERM, the time budget).
#
#   d. error cases with curl: wrong Content-Type -> 415, a body that is no SDP -> 400 (WHIP and
#      WHEP), an offer in no codec the server has -> 400, DELETE/PATCH of an unknown session ->
#      404, WHEP of an unknown participant -> 404; none of them leaves a session or participant;
#   a. GStreamer's webrtcbin publishes a moving test pattern (VP8, 640x360) and a sine tone (Opus)
#      into room `whip` over WHIP (gst_whip.py); the room API lists it with both tracks, PATCH on
#      its session answers 405; a headless Chromium participant on the web app
#      (tests/browser/whip_view.mjs) must decode its video at 640x360 and receive its audio, and
#      keep decoding it for WHIP_WHEP_VIEW_S (20 s: longer than the server's 5 s ICE
#      disconnected + 10 s media.disconnect_timeout); then the publisher DELETEs its session (200);
#   b. Chromium publishes its fake camera in room `whep`; aiortc (whep_view.py) views the room
#      over WHEP (the room API counts 1 viewer meanwhile) and decodes >= 60 video frames, then
#      views /whep/whep/{participant id from GET /api/rooms/whep} the same way; each DELETEs (200);
#   c. afterwards no WHIP participant is left, the rooms have 0 viewers and the gauges
#      confab_whip_sessions / confab_whep_sessions (and confab_participants) are back to 0.
#
# Needs root (ip netns). Prints PASS/FAIL lines with timings, exits 1 if any check failed (2 if
# something it needs is missing). Logs stay in a confab-whip-* temp directory. About 40 s (hard
# cap WHIP_WHEP_BUDGET_S, 170 s).
#
#   bash tests/interop/whip_whep.sh                       # target/debug/confab
#   CONFAB_BIN=target/release/confab bash tests/interop/whip_whep.sh
#   WHIP_WHEP_VIEW_S=8 bash tests/interop/whip_whep.sh     # shorter watch of the WHIP stream
#   WHIP_WHEP_H264=1 bash tests/interop/whip_whep.sh       # also e. (below), about 15 s more
#   WHIP_WHEP_GST_ARGS=--keepalive-conncheck bash ...      # diagnostic: extra gst_whip.py arguments
#     (--keepalive-conncheck: libnice keeps the pair alive with STUN Binding Requests instead of its
#     default Binding Indications every 25 s; shows whether a lost WHIP publisher is about that)
#
#   e. (WHIP_WHEP_H264=1) GStreamer publishes H.264 (openh264enc, constrained baseline) into room
#      whip264: Chromium must decode it at 640x360, and an aiortc WHEP viewer offering only H.264
#      must decode >= 60 frames; then the DELETE answers 200.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${CONFAB_BIN:-target/debug/confab}
VIEW_S=${WHIP_WHEP_VIEW_S:-20}
WHEP_S=${WHIP_WHEP_WHEP_S:-5}
BUDGET_S=${WHIP_WHEP_BUDGET_S:-170}
GST_PY=/usr/bin/python3
SUBNET=10.98.1
SERVER_IP=$SUBNET.1
BASE=http://$SERVER_IP:8080

die() { echo "whip_whep.sh: $*" >&2; exit 2; }
[ -x "$BIN" ] || die "$BIN not built (cargo build)"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for cmd in ip curl node python3; do command -v "$cmd" >/dev/null || die "'$cmd' not found"; done
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium not found (apt-get install chromium)"
[ -d node_modules/playwright-core ] || die "node_modules/playwright-core not found (npm ci)"
"$GST_PY" -c 'import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")' 2>/dev/null \
  || die "$GST_PY lacks gi/GStreamer WebRTC (apt-get install python3-gi gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-bad gstreamer1.0-nice)"
. tests/interop/python-deps.sh
python_deps

t_start=$(date +%s.%N)
elapsed() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%6.1f s", b - a }'; }
log() { echo "whip_whep [$(elapsed)] $*"; }
passed=0 failed=0
pass() { passed=$((passed + 1)); log "PASS $*"; }
fail() { failed=$((failed + 1)); log "FAIL $*"; }

# Leftovers of runs that were kill -9'ed (their pid is in the name and no longer alive).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^confab-whip-[0-9]+-(s|c)$' || true); do
  pid=${ns#confab-whip-}
  pid=${pid%%-*}
  kill -0 "$pid" 2>/dev/null || { echo "whip_whep.sh: deleting $ns, left over by run $pid" >&2; ip netns del "$ns" 2>/dev/null || true; }
done

id=confab-whip-$$
s=$id-s c=$id-c
tmp=$(mktemp -d "${TMPDIR:-/tmp}/confab-whip-XXXXXX")
server_log=$tmp/server.log
watchdog=
bg_pids=()

ns_delete() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -n "$pids" ] || break
      sleep 0.3
    done
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  fi
  ip netns del "$ns" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null || true
  for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  ns_delete "$c"
  ns_delete "$s"
  echo "whip_whep: logs in $tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted (SIGINT)"; exit 130' INT
trap 'if [ -e "$tmp/budget-exceeded" ]; then log "FAIL the whole run exceeded ${BUDGET_S} s"; exit 1; fi; log "interrupted (SIGTERM)"; exit 143' TERM
# The time budget: SIGTERM to this shell, whose trap cleans up; bash runs the trap only once its
# foreground command ends, so the processes in our namespaces are ended too. (Its output goes to
# /dev/null: a sleeping child holding our stdout would keep a pipe reader waiting; cleanup's
# SIGTERM ends its sleep too.)
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$BUDGET_S" &
  sleeper=$!
  wait "$sleeper"
  : >"$tmp/budget-exceeded"
  kill -TERM $$ 2>/dev/null
  sleep 1
  for ns in "$c" "$s"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -TERM 2>/dev/null; done
) >/dev/null 2>&1 &
watchdog=$!

ip netns add "$s"
ip netns add "$c"
ip -n "$s" link set lo up
ip -n "$c" link set lo up
# Created inside S with its peer moved straight into C: nothing appears in the root namespace.
ip -n "$s" link add vs type veth peer name vc netns "$c"
ip -n "$s" addr add "$SERVER_IP/24" dev vs
ip -n "$c" addr add "$SUBNET.2/24" dev vc
ip -n "$s" link set vs up
ip -n "$c" link set vc up

# (Background processes are started with `ip netns exec "$c" ...` itself, not this function: a
# function in the background is a subshell, and its pid would not be the process.)
inc() { ip netns exec "$c" "$@"; }
# curl from the clients' namespace: prints the HTTP status (000 when there was no answer).
http() { inc curl -s -o "$tmp/body" -w '%{http_code}' --max-time 5 "$@" || true; }
# GET $BASE$1 from the clients' namespace; a 404 (a room that is gone) prints {"absent": true}.
api() {
  local out
  out=$(inc curl -s --max-time 5 -w '\n%{http_code}' "$BASE$1" || true)
  if [ "${out##*$'\n'}" = 404 ]; then echo '{"absent": true}'; else echo "${out%$'\n'*}"; fi
}
# The value of metric $1 (no labels), empty when absent.
# awk reads to the end: leaving early could end `api`'s echo with SIGPIPE, which pipefail and
# set -e turn into the whole script exiting 141 (seen once in CI).
metric() { api /metrics | awk -v m="$1" '$1 == m && !found { print $2; found = 1 }'; }
# Reads JSON on stdin, prints python expression $1 of it (`d`), or `ERR` when it does not parse.
jq_py() { python3 -c 'import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print("ERR"); sys.exit(0)
print(eval(sys.argv[1]))' "$1"; }
# Polls `$2` (a shell command printing a value) until it prints $3, for at most $1 s; prints the last value.
wait_for() {
  local secs=$1 cmd=$2 want=$3 v="" deadline
  deadline=$(($(date +%s) + secs))
  while :; do
    v=$(eval "$cmd")
    [ "$v" = "$want" ] && break
    [ "$want" = __not_empty__ ] && [ -n "$v" ] && [ "$v" != - ] && [ "$v" != ERR ] && break
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 0.2
  done
  echo "$v"
}
# Waits until file $2 has a line matching $3 or process $4 ended, at most $1 s; 0 if it matched.
wait_line() {
  local secs=$1 file=$2 re=$3 pid=$4 deadline
  deadline=$(($(date +%s) + secs))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -qE "$re" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { grep -qE "$re" "$file" 2>/dev/null; return; }
    sleep 0.1
  done
  return 1
}
# Waits for background pid $2 at most $1 s (then SIGTERMs it, then SIGKILL); returns its exit code.
wait_pid() {
  local secs=$1 pid=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still running after ${secs} s: SIGTERM"
    kill -TERM "$pid" 2>/dev/null || true
    sleep 3
    kill -KILL "$pid" 2>/dev/null || true
  fi
  local rc=0
  wait "$pid" || rc=$?
  return "$rc"
}
# Runs `CMD...` in the clients' namespace with its output copied to file $1 and shown indented;
# in the background, waited for with `wait`, so that a signal to this shell runs its trap at once.
run_shown() {
  local out=$1 pid rc=0
  shift
  ( ip netns exec "$c" "$@" 2>&1 | tee "$out" | sed 's/^/    /' ) &
  pid=$!
  bg_pids+=("$pid")
  wait "$pid" || rc=$?
  return "$rc"
}
server_tail() {
  echo "--- server log (last 40 lines without DTLS extension notices, $server_log) ---"
  grep -v 'Unsupported Extension' "$server_log" | tail -n 40 || true
  echo "---"
}
gauges() { echo "whip=$(metric "$WHIP_GAUGE") whep=$(metric "$WHEP_GAUGE") participants=$(metric confab_participants)"; }

log "server $BIN (built $(date -r "$BIN" '+%F %T')), namespaces $s ($SERVER_IP) and $c ($SUBNET.2), logs in $tmp"
ip netns exec "$s" env CONFAB_HTTP__BIND="$SERVER_IP:8080" CONFAB_MEDIA__BIND="$SERVER_IP:50000" \
  CONFAB_MEDIA__TCP_BIND=off RUST_LOG=${WHIP_WHEP_RUST_LOG:-info} "$BIN" serve >"$server_log" 2>&1 &
server_pid=$!
bg_pids+=("$server_pid")
up=$(wait_for 15 "http $BASE/healthz" 200)
[ "$up" = 200 ] || { log "FAIL the server does not answer /healthz (last: $up)"; server_tail; exit 1; }
log "server healthy"
if [ "$(http -X OPTIONS "$BASE/whip/probe")" = 404 ]; then
  log "FAIL this server has no /whip endpoint (OPTIONS /whip/probe -> 404)"
  exit 1
fi
# The gauges' names: confab_whip_sessions / confab_whep_sessions, or whatever the server calls them.
metrics=$(api /metrics)
WHIP_GAUGE=$(awk '$1 ~ /^confab_whip[a-z_]*sessions$/ { print $1; exit }' <<<"$metrics")
WHEP_GAUGE=$(awk '$1 ~ /^confab_whep[a-z_]*sessions$/ { print $1; exit }' <<<"$metrics")
if [ -n "$WHIP_GAUGE" ] && [ -n "$WHEP_GAUGE" ]; then
  pass "/metrics exports the gauges $WHIP_GAUGE and $WHEP_GAUGE ($(gauges))"
else
  fail "/metrics has no WHIP/WHEP session gauges (confab_whip*_sessions, confab_whep*_sessions)"
  WHIP_GAUGE=${WHIP_GAUGE:-confab_whip_sessions} WHEP_GAUGE=${WHEP_GAUGE:-confab_whep_sessions}
fi

# ------------------------------------------------------------------------------ d. error cases
log "--- d. error cases (curl)"
# Syntactically fine offers: one with VP8 (for the Content-Type case) and one with nothing the
# server can take.
sdp() {
  printf 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n'
  printf 'a=fingerprint:sha-256 %s\r\n' "$(printf '00:%.0s' $(seq 31))00"
  printf 'm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n'
  printf 'a=setup:actpass\r\na=rtcp-mux\r\na=%s\r\na=rtpmap:96 %s\r\n' "$1" "$2"
}
sdp sendonly VP8/90000 >"$tmp/vp8.sdp"
sdp sendonly XVID/90000 >"$tmp/nocodec.sdp"
sdp recvonly VP8/90000 >"$tmp/view.sdp"
printf 'this is not an SDP offer\r\n' >"$tmp/garbage.sdp"
expect() { # expect WANT WHAT curl-args...
  local want=$1 what=$2 got
  shift 2
  got=$(http "$@")
  if [ "$got" = "$want" ]; then pass "$what -> $got"; else fail "$what -> $got, want $want: $(head -c 300 "$tmp/body")"; fi
}
expect 415 "POST /whip/errs with Content-Type: text/plain" -X POST -H 'Content-Type: text/plain' --data-binary @"$tmp/vp8.sdp" "$BASE/whip/errs?name=e1"
expect 415 "POST /whep/errs without a Content-Type" -X POST -H 'Content-Type:' --data-binary @"$tmp/view.sdp" "$BASE/whep/errs"
expect 400 "POST /whip/errs with a body that is no SDP" -X POST -H 'Content-Type: application/sdp' --data-binary @"$tmp/garbage.sdp" "$BASE/whip/errs?name=e2"
expect 400 "POST /whep/errs with a body that is no SDP" -X POST -H 'Content-Type: application/sdp' --data-binary @"$tmp/garbage.sdp" "$BASE/whep/errs"
expect 400 "POST /whip/errs with an offer in no supported codec (XVID)" -X POST -H 'Content-Type: application/sdp' --data-binary @"$tmp/nocodec.sdp" "$BASE/whip/errs?name=e3"
expect 404 "DELETE /whip/errs/session/nosuchsession" -X DELETE "$BASE/whip/errs/session/nosuchsession"
expect 404 "DELETE /whep/errs/session/nosuchsession" -X DELETE "$BASE/whep/errs/session/nosuchsession"
expect 404 "PATCH /whip/errs/session/nosuchsession" -X PATCH -H 'Content-Type: application/trickle-ice-sdpfrag' --data-binary 'a=end-of-candidates' "$BASE/whip/errs/session/nosuchsession"
expect 404 "POST /whep/errs/pNoSuchOne1 (no such participant)" -X POST -H 'Content-Type: application/sdp' --data-binary @"$tmp/view.sdp" "$BASE/whep/errs/pNoSuchOne1"
left=$(api /api/rooms/errs | jq_py 'len(d.get("participants", [])) + d.get("viewers", 0)')
g=$(wait_for 3 gauges "whip=0 whep=0 participants=0")
if [ "$left" = 0 ] && [ "$g" = "whip=0 whep=0 participants=0" ]; then
  pass "the refused requests left nothing behind (room errs: $(api /api/rooms/errs | jq_py '"no such room" if d.get("absent") else "empty"'); $g)"
else
  fail "the refused requests left something behind (room errs: $left participants+viewers; $g)"
fi

# ------------------------------------------------------------------------------ a. WHIP: GStreamer -> Chromium
log "--- a. WHIP: GStreamer webrtcbin publishes into room whip, Chromium decodes it"
gst_log=$tmp/gst_whip.log
# shellcheck disable=SC2086 # WHIP_WHEP_GST_ARGS: words
ip netns exec "$c" "$GST_PY" tests/interop/gst_whip.py "$BASE" --room whip --name gst --seconds $((VIEW_S + 60)) ${WHIP_WHEP_GST_ARGS:-} >"$gst_log" 2>&1 &
gst_pid=$!
bg_pids+=("$gst_pid")
if ! wait_line 20 "$gst_log" '^gst_whip: connected:' "$gst_pid"; then
  fail "GStreamer did not connect over WHIP:"
  sed 's/^/    /' "$gst_log"
  server_tail
  exit 1
fi
sed -n 's/^gst_whip: /    gst_whip: /p' "$gst_log" | grep -E 'POST|connected:' || true
pass "GStreamer webrtcbin connected over WHIP: $(sed -n 's/^gst_whip: connected: //p' "$gst_log")"
loc=$(sed -n 's/.* -> 201 in .*, Location \([^,]*\), ETag.*/\1/p' "$gst_log" | head -1)
room_json=$(api /api/rooms/whip)
gst_pub=$(jq_py '",".join(sorted(t["kind"] + ":" + (t.get("codec") or "?") for p in d["participants"] if p["name"] == "gst" for t in p.get("published", [])))' <<<"$room_json")
gst_kind=$(jq_py '[p.get("kind") for p in d["participants"] if p["name"] == "gst"]' <<<"$room_json")
if [[ "$gst_pub" == *audio:* && "$gst_pub" == *video:* ]]; then
  pass "GET /api/rooms/whip lists gst (kind $gst_kind) publishing $gst_pub"
else
  # The tracks appear when their first packets arrive: give them a moment.
  sleep 1
  room_json=$(api /api/rooms/whip)
  gst_pub=$(jq_py '",".join(sorted(t["kind"] + ":" + (t.get("codec") or "?") for p in d["participants"] if p["name"] == "gst" for t in p.get("published", [])))' <<<"$room_json")
  if [[ "$gst_pub" == *audio:* && "$gst_pub" == *video:* ]]; then pass "GET /api/rooms/whip lists gst publishing $gst_pub"
  else fail "GET /api/rooms/whip does not list gst with an audio and a video track: $room_json"; fi
fi
g=$(metric "$WHIP_GAUGE")
if [ "$g" = 1 ]; then pass "$WHIP_GAUGE is 1 while GStreamer publishes"; else fail "$WHIP_GAUGE is '$g' while GStreamer publishes, want 1"; fi
if [ -n "$loc" ]; then
  expect 405 "PATCH $loc (trickle ICE on a live session)" -X PATCH -H 'Content-Type: application/trickle-ice-sdpfrag' --data-binary 'a=end-of-candidates' "$BASE$loc"
else
  fail "no Location in gst_whip's output"
fi
t_view=$(date +%s.%N)
view_rc=0
run_shown "$tmp/whip_view.log" node tests/browser/whip_view.mjs view --base "$BASE" --room whip --publisher gst \
  --width 640 --height 360 --seconds "$VIEW_S" || true
grep -q '^FAIL' "$tmp/whip_view.log" && view_rc=1
grep -q '^PASS gst is still a participant' "$tmp/whip_view.log" || view_rc=1
view_took=$(awk -v a="$t_view" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ "$view_rc" = 0 ]; then
  pass "Chromium decoded GStreamer's WHIP video and audio for ${VIEW_S} s (whip_view.mjs, ${view_took} s)"
else
  fail "Chromium did not decode GStreamer's WHIP stream throughout (see above; whip_view.mjs, ${view_took} s)"
fi
# The publisher ends its session: SIGTERM makes gst_whip.py DELETE its Location.
kill -TERM "$gst_pid" 2>/dev/null || true
gst_rc=0
wait_pid 15 "$gst_pid" || gst_rc=$?
sed -n 's/^gst_whip: /    gst_whip: /p' "$gst_log" | grep -E 'published|DELETE|FAIL' || true
del=$(sed -n 's/.*"delete_status": \([0-9a-z]*\).*/\1/p' "$gst_log" | tail -1)
if [ "$gst_rc" = 0 ] && [ "$del" = 200 ]; then
  pass "GStreamer's DELETE $loc -> 200"
else
  fail "GStreamer's session did not end cleanly: exit $gst_rc, DELETE -> ${del:-none}"
  grep -E 'room\{name=whip\}.*(connection state: (Connected|Disconnected)|removing participant)|removed by the room' "$server_log" \
    | sed 's/^/    server: /' | tail -8 || true
fi
left=$(wait_for 3 "api /api/rooms/whip | jq_py 'len([p for p in d.get(\"participants\", []) if p[\"name\"] == \"gst\"])'" 0)
g=$(wait_for 3 "metric $WHIP_GAUGE" 0)
if [ "$left" = 0 ] && [ "$g" = 0 ]; then
  pass "after the DELETE: no WHIP participant in room whip ($(api /api/rooms/whip | jq_py '"room closed" if d.get("absent") else "room open"')), $WHIP_GAUGE 0"
else
  fail "after the DELETE: room whip still lists gst ($left) or $WHIP_GAUGE is '$g'"
fi

# ------------------------------------------------------------------------------ b. WHEP: Chromium -> aiortc
log "--- b. WHEP: Chromium publishes its camera in room whep, aiortc views it"
cam_log=$tmp/whip_view_publish.log
ip netns exec "$c" node tests/browser/whip_view.mjs publish --base "$BASE" --room whep --name cam --seconds 90 >"$cam_log" 2>&1 &
cam_pid=$!
bg_pids+=("$cam_pid")
if ! wait_line 30 "$cam_log" '^whip_view: publishing' "$cam_pid"; then
  fail "Chromium did not publish in room whep:"
  sed 's/^/    /' "$cam_log"
  server_tail
  exit 1
fi
log "    $(grep '^whip_view: publishing' "$cam_log")"
cam_id() { api /api/rooms/whep | jq_py 'next((p["id"] for p in d.get("participants", []) if p["name"] == "cam" and any(t["kind"] == "video" for t in p.get("published", []))), "-")'; }
pid_api=$(wait_for 5 cam_id "__not_empty__")
if [ -n "$pid_api" ] && [ "$pid_api" != - ] && [ "$pid_api" != ERR ]; then
  pass "GET /api/rooms/whep lists cam ($pid_api) publishing video"
else
  fail "GET /api/rooms/whep does not list cam publishing video: $(api /api/rooms/whep)"
fi
whep_run() { # whep_run LABEL ARGS...: one viewer; checks the viewer count while it runs
  local label=$1 out=$tmp/whep_view_$1.log vpid v rc=0
  shift
  ip netns exec "$c" python3 tests/interop/whep_view.py "$BASE" --room whep --seconds "$WHEP_S" --min-video-frames 60 "$@" >"$out" 2>&1 &
  vpid=$!
  bg_pids+=("$vpid")
  if wait_line 15 "$out" '^whep_view: connected' "$vpid"; then
    v=$(api /api/rooms/whep | jq_py 'd["viewers"]')
    g=$(metric "$WHEP_GAUGE")
    if [ "$v" = 1 ] && [ "$g" = 1 ]; then pass "while aiortc views ($label): GET /api/rooms/whep viewers 1, $WHEP_GAUGE 1"
    else fail "while aiortc views ($label): viewers '$v', $WHEP_GAUGE '$g', want 1 and 1"; fi
  fi
  wait_pid $((WHEP_S + 40)) "$vpid" || rc=$?
  sed 's/^/    /' "$out" | grep -v 'summary' || true
  if [ "$rc" = 0 ]; then
    pass "aiortc WHEP viewer ($label) decoded $(sed -n 's/^whep_view: decoded \([0-9]* video frames ([^;]*\).*/\1)/p' "$out") and DELETEd its session (200)"
  else
    fail "aiortc WHEP viewer ($label) failed (exit $rc)"
  fi
}
whep_run room
if [ -n "$pid_api" ] && [ "$pid_api" != - ] && [ "$pid_api" != ERR ]; then
  whep_run "participant $pid_api" --participant "$pid_api"
fi
v=$(wait_for 3 "api /api/rooms/whep | jq_py 'd.get(\"viewers\", 0)'" 0)
g=$(wait_for 3 "metric $WHEP_GAUGE" 0)
if [ "$v" = 0 ] && [ "$g" = 0 ]; then pass "after the viewers' DELETEs: room whep has 0 viewers, $WHEP_GAUGE 0"
else fail "after the viewers' DELETEs: room whep viewers '$v', $WHEP_GAUGE '$g', want 0"; fi
kill -TERM "$cam_pid" 2>/dev/null || true
wait_pid 15 "$cam_pid" || log "whip_view.mjs publish exited $?"

# ------------------------------------------------------------------------------ e. H.264 (opt-in)
if [ "${WHIP_WHEP_H264:-0}" = 1 ]; then
  log "--- e. WHIP in H.264: GStreamer (openh264enc) publishes into room whip264"
  h_log=$tmp/gst_whip_h264.log
  # shellcheck disable=SC2086
  ip netns exec "$c" "$GST_PY" tests/interop/gst_whip.py "$BASE" --room whip264 --name gst264 --codec h264 --seconds 60 ${WHIP_WHEP_GST_ARGS:-} >"$h_log" 2>&1 &
  h_pid=$!
  bg_pids+=("$h_pid")
  if wait_line 20 "$h_log" '^gst_whip: connected:' "$h_pid"; then
    pass "GStreamer connected over WHIP with H.264: $(sed -n 's/^gst_whip: connected: //p' "$h_log"); offered $(sed -n 's/.*\(profile-level-id=[0-9a-fA-F]*\).*/\1/p' "$h_log" | head -1)"
    run_shown "$tmp/whip_view_h264.log" node tests/browser/whip_view.mjs view --base "$BASE" --room whip264 --publisher gst264 \
      --width 640 --height 360 --seconds 5 || true
    if grep -q '^FAIL' "$tmp/whip_view_h264.log"; then fail "Chromium did not decode GStreamer's H.264 (see above)"
    else pass "Chromium decoded GStreamer's H.264 video and audio"; fi
    out=$tmp/whep_view_h264.log
    run_shown "$out" python3 tests/interop/whep_view.py "$BASE" --room whip264 --seconds "$WHEP_S" --min-video-frames 60 --video-codec H264 \
      | grep -E 'decoded|FAIL' || true
    if grep -q '"ok": true' "$out"; then pass "aiortc WHEP viewer (H.264 only) decoded GStreamer's H.264"
    else fail "aiortc WHEP viewer (H.264 only) did not decode GStreamer's H.264"; fi
    grep -h 'codec_not_negotiated' <(api /metrics) | sed 's/^/    server metric: /' || true
  else
    fail "GStreamer did not connect over WHIP with H.264:"
    sed 's/^/    /' "$h_log"
  fi
  kill -TERM "$h_pid" 2>/dev/null || true
  h_rc=0
  wait_pid 15 "$h_pid" || h_rc=$?
  del=$(sed -n 's/.*"delete_status": \([0-9a-z]*\).*/\1/p' "$h_log" | tail -1)
  if [ "$h_rc" = 0 ] && [ "$del" = 200 ]; then pass "GStreamer's H.264 session: DELETE -> 200"
  else fail "GStreamer's H.264 session did not end cleanly: exit $h_rc, DELETE -> ${del:-none}"; fi
fi

# ------------------------------------------------------------------------------ c. nothing leaks
log "--- c. leaks"
g=$(wait_for 5 gauges "whip=0 whep=0 participants=0")
rooms=$(api /api/rooms)
whip_left=$(jq_py 'sum(1 for r in d.get("rooms", []) for p in (r.get("participants") or []) if p.get("kind") == "whip" or p.get("name") == "gst")' <<<"$rooms")
viewers_left=$(jq_py 'sum(r.get("viewers", 0) for r in d.get("rooms", []))' <<<"$rooms")
if [ "$g" = "whip=0 whep=0 participants=0" ] && [ "$whip_left" = 0 ] && [ "$viewers_left" = 0 ]; then
  pass "everyone gone: $g, GET /api/rooms: no WHIP participant, 0 viewers"
else
  fail "something leaked: $g; GET /api/rooms: $rooms"
fi
kill -0 "$server_pid" 2>/dev/null || fail "the server exited during the test"

total=$(elapsed)
log "whip_whep: $passed passed, $failed failed (${total# *})"
if [ "$failed" -gt 0 ]; then
  server_tail
  exit 1
fi
