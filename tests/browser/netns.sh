#!/usr/bin/env bash
# Network namespaces for the shaped-network, lossy-link and connectivity browser tests (shaped.sh /
# shaped.mjs, lossy.sh / lossy.mjs, connectivity.sh / connectivity.mjs).
#
# Topology for an ID and N browsers (everything lives in namespaces this script creates; the
# host's own interfaces are never touched and no route leads off the machine):
#
#   <ID>-s   the server's namespace: bridge br0 at 10.99.0.1/24, ports vs1..vsN
#   <ID>-bK  browser K's namespace: vbK at 10.99.0.1K/24, the other end of vsK
#
# The server→browser direction of browser K's link leaves S through vsK, so a qdisc on vsK's
# egress shapes exactly that participant's downlink; what browser K sends arrives on vsK, so a
# rule on what comes in by vsK hits exactly its uplink. Rate caps use tc tbf (this kernel has no
# netem); losses use nftables `numgen random` drops (bridge family, in S).
#
#   netns.sh up ID N               create <ID>-s and <ID>-b1..bN
#   netns.sh down ID               end the processes left in them, delete them
#   netns.sh cap ID K RATE         (re)cap the server→browser K direction, e.g. 300kbit
#   netns.sh uncap ID K            remove that cap
#   netns.sh loss ID K PERMILLE    drop PERMILLE/1000 of the UDP datagrams towards browser K (0: none)
#   netns.sh uplink-loss ID K PERMILLE
#                                  drop PERMILLE/1000 of the UDP datagrams from browser K (0: none)
#   netns.sh counters ID K         print the UDP datagrams browser K's loss rules saw and dropped
#                                  since each was last set: `down SEEN DROPPED`, `up SEEN DROPPED`
#   netns.sh block-udp ID K        drop every UDP datagram between browser K and S, both ways
#   netns.sh unblock-udp ID K      remove that block
#   netns.sh block-media ID K      drop UDP and TCP to and from the media port (MEDIA_PORT, 50000)
#                                  between browser K and S, both ways (HTTP and the WebSocket pass)
#   netns.sh unblock-media ID K    remove that block
#   netns.sh blocked ID K          print the packets browser K's blocks dropped since each was set:
#                                  `udp DROPPED`, `media DROPPED`
#   netns.sh move ID K             give browser K a new address: add 10.99.0.2K/24 to vbK, then
#                                  delete its 10.99.0.1K (what a laptop moving to another network
#                                  or a phone leaving Wi-Fi sees: the old address is gone at once);
#                                  prints the new address. Once moved, K stays at 10.99.0.2K.
#   netns.sh address ID K          print browser K's current IPv4 address on vbK
#   netns.sh wrapper ID K BIN OUT  write OUT, an executable that runs BIN in <ID>-bK
#   netns.sh stale                 delete leftover namespaces of runs that are no longer alive
#   netns.sh describe              print the tbf parameters a cap uses
#
# The tbf bucket (SHAPED_TBF_BURST, bytes) and queue (SHAPED_TBF_LATENCY) model an access
# link's bottleneck: a bucket of two full-size frames means packets leave at the capped rate,
# as they do from a real link's serialiser, instead of in bursts at veth speed; a queue of
# 200 ms is a typical modem/router buffer (deep enough that a delay-based estimator sees the
# queue build before loss, far from the seconds of a badly bloated one).
set -euo pipefail

SUBNET=10.99.0
TBF_BURST=${SHAPED_TBF_BURST:-3028}
TBF_LATENCY=${SHAPED_TBF_LATENCY:-200ms}
MEDIA_PORT=50000
# Namespace names start with one of these, then the pid of the shaped.sh / lossy.sh /
# connectivity.sh / … that owns them.
PREFIX_RE='confab-(shaped|lossy|connectivity|turn|firefox)-'

die() { echo "netns.sh: $*" >&2; exit 2; }

ns_up() {
  local id=$1 n=$2 s=$1-s k
  ip netns add "$s"
  ip -n "$s" link set lo up
  ip -n "$s" link add br0 type bridge
  ip -n "$s" addr add "$SUBNET.1/24" dev br0
  ip -n "$s" link set br0 up
  for ((k = 1; k <= n; k++)); do
    ip netns add "$id-b$k"
    ip -n "$id-b$k" link set lo up
    # Created inside S with its peer moved straight into B: nothing appears in the root namespace.
    ip -n "$s" link add "vs$k" type veth peer name "vb$k" netns "$id-b$k"
    ip -n "$s" link set "vs$k" master br0 up
    ip -n "$id-b$k" addr add "$SUBNET.1$k/24" dev "vb$k"
    ip -n "$id-b$k" link set "vb$k" up
  done
  # With STP off a bridge port forwards at once; check rather than assume.
  if ip netns exec "$s" bridge link show | grep -v 'state forwarding' | grep -q .; then
    die "a bridge port of $s is not forwarding: $(ip netns exec "$s" bridge link show)"
  fi
}

# Ends the processes still inside a namespace (by pid), then deletes it.
ns_delete() {
  local ns=$1 pids tries
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for tries in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -n "$pids" ] || break
      sleep 0.3
    done
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  fi
  ip netns del "$ns" 2>/dev/null || true
}

ns_down() {
  local id=$1 ns
  # Browsers first, so nothing is left talking to the server while it goes.
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$id-b[0-9]+$" || true); do ns_delete "$ns"; done
  ns_delete "$id-s"
}

cap() {
  local id=$1 k=$2 rate=$3
  tc -n "$id-s" qdisc replace dev "vs$k" root tbf rate "$rate" burst "$TBF_BURST" latency "$TBF_LATENCY"
}

uncap() {
  local id=$1 k=$2
  tc -n "$id-s" qdisc del dev "vs$k" root 2>/dev/null || true
}

# (Re)sets one direction's drop rules for a browser, in a table of their own private to S, with
# counters: the rules commented "seen" count every UDP datagram of that direction, "dropped" the
# ones dropped. Down (server→browser K): the server's datagrams meet the bridge family's output
# hook on the port they leave by. Up (browser K→server): they meet its input hook on the port
# they arrive by. The forward chain catches anything bridged between ports, either way.
set_loss() {
  local s=$1 table=$2 local_hook=$3 dir=$4 port=$5 permille=$6 chain
  nft --version >/dev/null 2>&1 || die "loss needs nftables (apt-get install nftables)"
  case "$permille" in '' | *[!0-9]*) die "PERMILLE must be a whole number 0..1000, not '$permille'" ;; esac
  [ "$permille" -le 1000 ] || die "PERMILLE must be at most 1000, not $permille"
  ip netns exec "$s" nft -f - <<EOF
table bridge $table
delete table bridge $table
table bridge $table {
  chain bridged { type filter hook forward priority 0; policy accept; }
  chain local { type filter hook $local_hook priority 0; policy accept; }
}
EOF
  [ "$permille" -gt 0 ] || return 0
  for chain in bridged local; do
    ip netns exec "$s" nft add rule bridge "$table" "$chain" "$dir" "$port" meta l4proto udp \
      counter comment '"seen"'
    ip netns exec "$s" nft add rule bridge "$table" "$chain" "$dir" "$port" meta l4proto udp \
      numgen random mod 1000 '<' "$permille" counter drop comment '"dropped"'
  done
}

loss() {
  local id=$1 k=$2 permille=$3
  set_loss "$id-s" "loss$k" output oifname "vs$k" "$permille"
}

uplink_loss() {
  local id=$1 k=$2 permille=$3
  set_loss "$id-s" "uloss$k" input iifname "vs$k" "$permille"
}

# The packets counted by the rules commented $3 in table $2 of namespace $1 (0 without the table).
sum_counter() {
  local s=$1 table=$2 comment=$3
  { ip netns exec "$s" nft list table bridge "$table" 2>/dev/null || true; } |
    awk -v c="comment \"$comment\"" 'index($0, c) { for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }'
}

counters() {
  local s=$1-s k=$2
  echo "down $(sum_counter "$s" "loss$k" seen) $(sum_counter "$s" "loss$k" dropped)"
  echo "up $(sum_counter "$s" "uloss$k" seen) $(sum_counter "$s" "uloss$k" dropped)"
}

# Blocks (connectivity.sh): a table per browser and kind in S's bridge family, dropping what
# matches in all three hooks it can meet: input (browser K -> S's own addresses, arriving by vsK),
# output (S -> browser K, leaving by vsK) and forward (bridged between ports, either way). Every
# drop rule counts what it dropped. $4 / $5: the nft match (after the interface) for the traffic
# from / to browser K.
set_block() {
  local s=$1-s k=$2 table=$3 up=$4 down=$5
  nft --version >/dev/null 2>&1 || die "blocks need nftables (apt-get install nftables)"
  ip netns exec "$s" nft -f - <<EOF
table bridge $table
delete table bridge $table
table bridge $table {
  chain bridged {
    type filter hook forward priority 0; policy accept;
    iifname "vs$k" $up counter drop
    oifname "vs$k" $down counter drop
  }
  chain in {
    type filter hook input priority 0; policy accept;
    iifname "vs$k" $up counter drop
  }
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "vs$k" $down counter drop
  }
}
EOF
}

clear_block() {
  local s=$1-s table=$2
  ip netns exec "$s" nft delete table bridge "$table" 2>/dev/null || true
}

# Packets dropped by every rule of table $2 in namespace $1 (0 without the table).
sum_dropped() {
  local s=$1 table=$2
  { ip netns exec "$s" nft list table bridge "$table" 2>/dev/null || true; } |
    awk '/ drop/ { for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }'
}

block_udp() {
  set_block "$1" "$2" "blockudp$2" "meta l4proto udp" "meta l4proto udp"
}

block_media() {
  set_block "$1" "$2" "blockmedia$2" \
    "meta l4proto { udp, tcp } th dport $MEDIA_PORT" "meta l4proto { udp, tcp } th sport $MEDIA_PORT"
}

blocked() {
  local s=$1-s k=$2
  echo "udp $(sum_dropped "$s" "blockudp$k")"
  echo "media $(sum_dropped "$s" "blockmedia$k")"
}

address() {
  local b=$1-b$2 k=$2
  ip -n "$b" -4 -o addr show dev "vb$k" | awk '{ split($4, a, "/"); print a[1]; exit }'
}

move() {
  local b=$1-b$2 k=$2 old new
  old=$(address "$1" "$k")
  new="$SUBNET.2$k"
  [ "$old" != "$new" ] || die "browser $k already has $new"
  # Without this, deleting the subnet's primary address would delete the new one with it.
  ip netns exec "$b" sysctl -qw "net.ipv4.conf.vb$k.promote_secondaries=1"
  ip -n "$b" addr add "$new/24" dev "vb$k"
  ip -n "$b" addr del "$old/24" dev "vb$k"
  [ "$(address "$1" "$k")" = "$new" ] || die "browser $k: $new did not replace $old"
  echo "$new"
}

wrapper() {
  local id=$1 k=$2 bin=$3 out=$4
  printf '#!/bin/sh\n# Generated by tests/browser/netns.sh: runs %s in network namespace %s.\nexec ip netns exec %s %s "$@"\n' \
    "$bin" "$id-b$k" "$id-b$k" "$bin" >"$out"
  chmod +x "$out"
}

stale() {
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX_RE[0-9]+-(s|b[0-9]+)$" || true); do
    pid=${ns#confab-*-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "netns.sh: deleting $ns, left over by run $pid" >&2
      ns_delete "$ns"
    fi
  done
}

[ "$(id -u)" = 0 ] || die "needs root (ip netns, tc)"
cmd=${1:-}
shift || true
case "$cmd" in
  up) [ $# = 2 ] || die "usage: up ID N"; ns_up "$@" ;;
  down) [ $# = 1 ] || die "usage: down ID"; ns_down "$@" ;;
  cap) [ $# = 3 ] || die "usage: cap ID K RATE"; cap "$@" ;;
  uncap) [ $# = 2 ] || die "usage: uncap ID K"; uncap "$@" ;;
  loss) [ $# = 3 ] || die "usage: loss ID K PERMILLE"; loss "$@" ;;
  uplink-loss) [ $# = 3 ] || die "usage: uplink-loss ID K PERMILLE"; uplink_loss "$@" ;;
  counters) [ $# = 2 ] || die "usage: counters ID K"; counters "$@" ;;
  block-udp) [ $# = 2 ] || die "usage: block-udp ID K"; block_udp "$@" ;;
  unblock-udp) [ $# = 2 ] || die "usage: unblock-udp ID K"; clear_block "$1" "blockudp$2" ;;
  block-media) [ $# = 2 ] || die "usage: block-media ID K"; block_media "$@" ;;
  unblock-media) [ $# = 2 ] || die "usage: unblock-media ID K"; clear_block "$1" "blockmedia$2" ;;
  blocked) [ $# = 2 ] || die "usage: blocked ID K"; blocked "$@" ;;
  move) [ $# = 2 ] || die "usage: move ID K"; move "$@" ;;
  address) [ $# = 2 ] || die "usage: address ID K"; address "$@" ;;
  wrapper) [ $# = 4 ] || die "usage: wrapper ID K BIN OUT"; wrapper "$@" ;;
  stale) stale ;;
  describe) echo "tbf burst $TBF_BURST bytes, latency $TBF_LATENCY" ;;
  *) die "unknown command '$cmd' (up, down, cap, uncap, loss, uplink-loss, counters, block-udp, unblock-udp, block-media, unblock-media, blocked, move, address, wrapper, stale, describe)" ;;
esac
