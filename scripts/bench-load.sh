#!/usr/bin/env bash
# Standard load scenarios against a release build of Confab, one table at the end.
#
#   scripts/bench-load.sh                 # 30 s per scenario
#   DURATION=10s scripts/bench-load.sh    # shorter
#   PIN=1 scripts/bench-load.sh           # server on CPU 0, load generator on the other CPUs
#   BIN=/tmp/confab-old scripts/bench-load.sh   # another server binary, same load generator
#
# Scenarios (from issue 3):
#   meeting    1 room, 6 publishers (video 1.5 Mbps + audio), each receiving all others
#   fanout     1 room, 1 publisher, 40 receive-only subscribers
#   manyrooms  20 rooms x 3 publishers, each receiving the other two
#   room100    1 room, 1 publisher, 99 receive-only subscribers (the largest room by default)
# The server is restarted for each scenario so its memory figures are its own. Everything runs
# on 127.0.0.1 (HTTP 127.0.0.1:18080, media UDP 127.0.0.1:15000).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
PIN=${PIN:-0}
OUT=${OUT:-$(mktemp -d /tmp/confab-bench.XXXXXX)}
mkdir -p "$OUT"
HTTP=127.0.0.1:18080
# BIN/LOADTEST: other binaries (e.g. an older server for a before/after in one sitting);
# with either set, nothing is built.
if [ -z "${BIN:-}${LOADTEST:-}" ]; then
  echo "== building release (server and load generator)" >&2
  cargo build --release --workspace --bins >&2
fi
BIN=${BIN:-target/release/confab}
LOADTEST=${LOADTEST:-target/release/confab-loadtest}

server_cpu=() ; load_cpu=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null; then
  n=$(nproc)
  server_cpu=(taskset -c 0)
  if [ "$n" -gt 1 ]; then load_cpu=(taskset -c "1-$((n - 1))"); fi
fi

run_scenario() {
  local name=$1; shift
  echo "== scenario $name: $*" >&2
  CONFAB_HTTP__BIND=$HTTP CONFAB_MEDIA__BIND=127.0.0.1:15000 CONFAB_MEDIA__TCP_BIND=127.0.0.1:15000 RUST_LOG=warn \
    CONFAB_LIMITS__JOINS_PER_SECOND_PER_IP=0 \
    "${server_cpu[@]}" "$BIN" serve >"$OUT/$name.server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local rc=0
  "${load_cpu[@]}" "$LOADTEST" --url "ws://$HTTP/ws" --duration "$DURATION" --ramp 20/s \
    --server-pid "$pid" --metrics-url "http://$HTTP/metrics" --json "$OUT/$name.json" \
    --quiet "$@" >"$OUT/$name.table.txt" 2>"$OUT/$name.load.log" || rc=$?
  # The server's own view (forward latency histogram) at the end of the run.
  curl -fsS "http://$HTTP/metrics" >"$OUT/$name.metrics.txt" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "   exit $rc, report $OUT/$name.json" >&2
}

run_scenario meeting   --rooms 1  --publishers 6 --subscribers 0  --video-bitrate 1.5M --fps 30
run_scenario fanout    --rooms 1  --publishers 1 --subscribers 40 --video-bitrate 1.5M --fps 30
run_scenario manyrooms --rooms 20 --publishers 3 --subscribers 0  --video-bitrate 1.5M --fps 30
run_scenario room100   --rooms 1  --publishers 1 --subscribers 99 --video-bitrate 1.5M --fps 30

python3 - "$OUT" <<'PY'
import json, os, platform, re, sys
out = sys.argv[1]
rows = []

def forward_latency(name):
    """Mean and p99 (ms, interpolated in the histogram's buckets) of
    confab_forward_latency_seconds from the metrics scraped at the end of the run."""
    path = os.path.join(out, name + ".metrics.txt")
    if not os.path.exists(path):
        return None, None
    buckets, total, count = [], 0.0, 0.0
    for line in open(path):
        m = re.match(r'confab_forward_latency_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, float(m.group(2))))
        m = re.match(r"confab_forward_latency_seconds_(sum|count) (\S+)", line)
        if m and m.group(1) == "sum":
            total = float(m.group(2))
        elif m:
            count = float(m.group(2))
    if not buckets or count == 0:
        return None, None
    target, prev = 0.99 * buckets[-1][1], (0.0, 0.0)
    p99 = None
    for le, c in buckets:
        if c >= target:
            lo, clo = prev
            p99 = lo if le == float("inf") else lo + (le - lo) * (target - clo) / max(c - clo, 1)
            break
        prev = (le, c)
    return 1000 * total / count, (1000 * p99 if p99 is not None else None)

for name in ["meeting", "fanout", "manyrooms", "room100"]:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        rows.append((name, "no report", "", "", "", "", "", "", "", ""))
        continue
    r = json.load(open(path))
    s = r.get("server") or {}
    f = lambda v, fmt: (fmt % v) if isinstance(v, (int, float)) else "n/a"
    rows.append((
        name,
        "%s/%s" % (r.get("tracks_received"), r.get("tracks_expected")),
        f(r.get("loss_pct"), "%.3f %%"),
        f((r.get("latency_ms") or {}).get("p99"), "%.1f ms"),
        f((r.get("join_ms") or {}).get("p95"), "%.0f ms"),
        f(s.get("forwarded_packets"), "%d"),
        f(s.get("cpu_us_per_forwarded_packet"), "%.2f µs"),
        f((s.get("rss_peak_bytes") or s.get("rss_bytes") or 0) / 2**20, "%.0f MiB"),
        "%s / %s" % tuple(f(v, "%.1f ms") for v in forward_latency(name)),
        "pass" if r.get("passed") else "FAIL",
    ))
hdr = ("scenario", "tracks", "loss", "delay p99", "join p95", "forwarded pkts", "server CPU/fwd pkt", "server RSS peak", "server forward latency mean / p99", "verdict")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for row in rows:
    print("| " + " | ".join(str(c) for c in row) + " |")
print()
print("machine: %s, %d CPUs, %s" % (platform.machine(), os.cpu_count(), platform.platform()))
PY
