#!/usr/bin/env bash
# Probe rate and reply capture of `widescan run` (one worker, uncapped: rate 10^7) in the namespace lab.
#   aliased: 2^BITS addresses of the lab's aliased /64, every one answers (the stress case for the listener);
#   sparse:  examples/lab.yaml's targets (70144 positions, 32 live), as a real scan's hit rate looks;
#   dead:    2^BITS addresses nobody answers (…:200::/(128-BITS)): the send path alone, masscan's too.
# Prints the run's summary line (its probes/s: registration to last shard done) and the capture ratio (valid
# replies / replies expected) per round. In the aliased scenario each round also runs `masscan --ping`
# (Debian's 1.3.2) on the same targets right after, times both tools by the responder's counter, and prints
# the ratios; in the dead scenario too, timed by the responder's veth rx_packets (unanswered echoes are not
# counted as Icmp6InEchos). masscan sometimes hangs after --wait: bounded by a timeout.
# HOG=1: another process spins one core throughout (both tools' runs), as the issue's "under load" case.
# RATE=N: widescan's job-wide cap (default 10^7, i.e. uncapped); masscan always runs uncapped.
# IO=packet: widescan's worker sends on the packet path (WIDESCAN_IO=packet: Ethernet frames on a packet
# socket on the scanner's responder link, from masscan's source address, to the router MAC masscan is given).
# SENDERS=N: the worker sends on N threads (WIDESCAN_SENDER_THREADS=N), each with its own socket.
# Usage: [HOG=1] [RATE=N] [IO=packet] [SENDERS=N] bash bench/probe-rate.sh [aliased|sparse|dead] [rounds=3] [bits=20]
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-aliased}
rounds=${2:-3}
bits=${3:-20}
# masscan loads libpcap at run time, which Debian's masscan package only recommends: without it masscan
# sends nothing ("failed to load libpcap shared library").
if [ "$scenario" != sparse ] && ! { command -v masscan >/dev/null && ldconfig -p | grep -c 'libpcap\.so\.0\.8' >/dev/null; }; then
  echo "installing masscan and libpcap0.8" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq masscan libpcap0.8 >/dev/null
fi
source bench/lab.sh
bench_lab br
case "$scenario" in
  aliased) expected=$((2 ** bits)); job=$(bench_job rate "fd00:5ca:1ab:1aa::/$((128 - bits))" "${RATE:-10000000}" 2) ;;
  dead) expected=0; job=$(bench_job rate "fd00:5ca:1ab:200::/$((128 - bits))" 10000000 1) ;;
  sparse)
    expected=32 # the lab job's live targets (the peer namespace's kernel answers even without a listener)
    job=$(mktemp --suffix=.yaml)
    sed -e 's/packetsPerSecond: 20000/packetsPerSecond: 10000000/' examples/lab.yaml >"$job"
    ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
router=$(ip -n "$lab-resp" link show "$lab-to-scan" | awk '/ether/ { print $2 }')
bench_wenv # widescan's extra environment (IO, SENDERS)
[ ${#wenv[@]} -eq 0 ] || echo "widescan's worker environment: ${wenv[*]}"
# Both tools are timed the same way: the responder namespace's Icmp6InEchos counter (dead: its veth's
# rx_packets), sampled every 50 ms; the send rate is its increase over the time it kept increasing.
sampled() {
  local log=$1; shift
  # One shell inside the responder namespace, builtins only, so that sampling costs next to nothing.
  if [ "$scenario" = dead ]; then
    ip netns exec "$lab-resp" bash -c 'while :; do read -r v </sys/class/net/$0-to-scan/statistics/rx_packets
      printf "%s %s\n" "$EPOCHREALTIME" "$v"; read -r -t 0.05 <> <(:) || :; done' "$lab" >"$log" &
  else
    ip netns exec "$lab-resp" bash -c 'while :; do while read -r k v; do [ "$k" = Icmp6InEchos ] && break; done </proc/net/snmp6
      printf "%s %s\n" "$EPOCHREALTIME" "$v"; read -r -t 0.05 <> <(:) || :; done' >"$log" &
  fi
  local sampler=$!
  "$@" || true
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
}
# CPU seconds (user + system) of a command and every descendant it waited for, per million probes: for
# widescan the whole `run` tree (planner, bootstrap, worker, listener, redis-server), for masscan masscan.
cpu_of() { # file command…: runs it, writes "user sys" to file
  local file=$1; shift
  local TIMEFORMAT='%U %S'
  { time "$@" ; } 2>"$file"
}
per_million() { awk -v f="$1" -v n="$2" 'BEGIN { getline l < f; split(l, t, " "); printf "%.2f", (t[1] + t[2]) * 1e6 / n }'; }
send_rate() { # from a sample log: probes/s while the counter rose
  awk 'NR == 1 { c0 = $2 } $2 > last { if (!t0) t0 = prev; t1 = $1; n = $2 - c0 } { prev = $1; last = $2 } END { printf "%d", n / (t1 - t0) }' "$1"
}
busy_rate() { # from a sample log: packets/s over the sampling intervals that carried more than 1000 (20 000/s),
  # so that a tool's stray packets before it starts sending (neighbour discovery) do not stretch its window
  awk 'NR > 1 && $2 - last > 1000 { n += $2 - last; t += $1 - prev } { prev = $1; last = $2 } END { printf "%d", t ? n / t : 0 }' "$1"
}
if [ "${HOG:-0}" = 1 ]; then
  node -e 'for (;;) {}' &
  hog=$!
  trap 'kill "$hog" 2>/dev/null; node dist/cli/main.js testbed down --name "$lab" >/dev/null' EXIT
  echo "a CPU hog (pid $hog) spins one core throughout"
fi
for i in $(seq "$rounds"); do
  log=$(mktemp)
  out=$(mktemp)
  cpu=$(mktemp)
  sampled "$log" cpu_of "$cpu" sh -c 'ns=$1 job=$2; shift 2; ip netns exec "$ns" env "$@" node dist/cli/main.js run "$job" --no-progress 2>/dev/null' \
    - "$lab-scan" "$job" "${wenv[@]}" >"$out"
  line=$(grep -E '^(Succeeded|Failed)' "$out")
  probes=$(sed -E 's/^[A-Za-z]+: ([0-9]+) probes.*/\1/' <<<"$line")
  valid=$(sed -E 's/.* ([0-9]+) valid replies.*/\1/' <<<"$line")
  wrate=$(send_rate "$log")
  echo "round $i: widescan: $line"
  echo "round $i: widescan: $(per_million "$cpu" "$probes") CPU s per million probes (whole run tree)"
  if [ "$scenario" = dead ]; then
    wrate=$(busy_rate "$log")
    echo "round $i: widescan: sent at $wrate/s (responder veth counter, busy intervals)"
    sampled "$log" cpu_of "$cpu" sh -c 'timeout 300 ip netns exec "$1" masscan --ping --range "$2" --adapter "$3" \
      --adapter-ip fd00:5ca:1ab:f001::1 --router-mac "$4" --rate 10000000 --wait 1 >/dev/null 2>&1' - \
      "$lab-scan" "fd00:5ca:1ab:200::/$((128 - bits))" "$lab-to-resp" "$router"
    mrate=$(busy_rate "$log")
    [ "$mrate" -gt 0 ] || { echo "masscan sent nothing: run it by hand to see why" >&2; exit 1; }
    echo "round $i: masscan:  sent at $mrate/s (responder veth counter, busy intervals), $(per_million "$cpu" "$((2 ** bits))") CPU s per million probes"
    echo "round $i: ratio widescan/masscan: rate $(awk -v a="$wrate" -v b="$mrate" 'BEGIN { printf "%.2f", a / b }')"
    continue
  fi
  wcap=$(awk -v v="$valid" -v e="$expected" 'BEGIN { printf "%.4f", v / e }')
  echo "round $i: widescan: capture $wcap of $expected expected replies"
  if [ "$scenario" = aliased ]; then
    echo "round $i: widescan: sent at $wrate/s (responder counter)"
    sampled "$log" cpu_of "$cpu" sh -c 'timeout 300 ip netns exec "$1" masscan --ping --range "$2" --adapter "$3" \
      --adapter-ip fd00:5ca:1ab:f001::1 --router-mac "$4" --rate 10000000 --wait 2 -oL "$5" >/dev/null 2>&1' - \
      "$lab-scan" "fd00:5ca:1ab:1aa::/$((128 - bits))" "$lab-to-resp" "$router" "$out"
    mrate=$(send_rate "$log")
    [ "$mrate" -gt 0 ] || { echo "masscan sent nothing: run it by hand to see why" >&2; exit 1; }
    echo "round $i: masscan:  $(per_million "$cpu" "$expected") CPU s per million probes (its --wait included)"
    found=$(grep -c '^open' "$out" || true)
    mcap=$(awk -v f="$found" -v e="$expected" 'BEGIN { printf "%.4f", f / e }')
    echo "round $i: masscan:  sent at $mrate/s (responder counter), capture $mcap ($found replies)"
    echo "round $i: ratio widescan/masscan: rate $(awk -v a="$wrate" -v b="$mrate" 'BEGIN { printf "%.2f", a / b }'), capture $(awk -v a="$wcap" -v b="$mcap" 'BEGIN { printf "%.2f", a / b }')"
  fi
  rm -f "$log" "$out" "$cpu"
done
