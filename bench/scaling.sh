#!/usr/bin/env bash
# Worker scaling (issue 6): one `widescan run` (one worker) against two at once from two scanner namespaces,
# each sending 2^BITS probes to lab addresses nobody answers (the send path alone; the responder drops them).
# The second scanner namespace `<lab>-sc2` is wired to the responder by its own veth (…:f003::/64) and removed
# with the lab. Rates come from the responder's side: its two veths' rx_packets counters, sampled every 50 ms
# inside the responder namespace; a rate is the counters' increase over the time they kept increasing, so the
# aggregate counts only the time the two runs really overlapped.
# IO=packet: both workers send on the packet path, each on its own link; SENDERS=N: on N sender threads.
# Usage: [IO=packet] [SENDERS=N] bash bench/scaling.sh [rounds=2] [bits=20]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
bits=${2:-20}
source bench/lab.sh
bench_lab sc
sc2="$lab-sc2"
trap 'ip netns del "$sc2" 2>/dev/null; node dist/cli/main.js testbed down --name "$lab" >/dev/null' EXIT
ip netns add "$sc2"
ip -n "$sc2" link set lo up
ip link add "$lab-to-resp2" netns "$sc2" type veth peer name "$lab-to-sc2" netns "$lab-resp"
ip -n "$sc2" -6 addr add fd00:5ca:1ab:f003::1/64 dev "$lab-to-resp2" nodad
ip -n "$lab-resp" -6 addr add fd00:5ca:1ab:f003::2/64 dev "$lab-to-sc2" nodad
ip -n "$sc2" link set "$lab-to-resp2" up
ip -n "$lab-resp" link set "$lab-to-sc2" up
ip -n "$sc2" -6 route add fd00:5ca:1ab:200::/64 via fd00:5ca:1ab:f003::2 dev "$lab-to-resp2"
# Each run's extra environment (IO, SENDERS: see bench_wenv), each on its own link.
bench_wenv
env1=("${wenv[@]}")
bench_wenv "$lab-to-resp2" "$lab-to-sc2" fd00:5ca:1ab:f003::1
env2=("${wenv[@]}")
# Two disjoint halves of the unanswered /64, one per scanner.
job1=$(bench_job one "fd00:5ca:1ab:200::1:0:0/$((128 - bits))" 10000000 1)
job2=$(bench_job two "fd00:5ca:1ab:200::2:0:0/$((128 - bits))" 10000000 1)
# Samples "time rx(scan link) rx(sc2 link)" every 50 ms while a command runs (builtins only, inside resp).
sampled() {
  local log=$1; shift
  ip netns exec "$lab-resp" bash -c 'while :; do read -r a </sys/class/net/$0-to-scan/statistics/rx_packets; read -r b </sys/class/net/$0-to-sc2/statistics/rx_packets
    printf "%s %s %s\n" "$EPOCHREALTIME" "$a" "$b"; read -r -t 0.05 <> <(:) || :; done' "$lab" >"$log" &
  local sampler=$!
  "$@" || true
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
}
# probes/s of column col (2: scan link, 3: sc2 link, 0: both) while it rose
rate() { awk -v c="$2" '{ v = c ? $c : $2 + $3 } NR == 1 { v0 = v } v > last { if (!t0) t0 = prev; t1 = $1; n = v - v0 } { prev = $1; last = v } END { printf "%d", n / (t1 - t0) }' "$1"; }
both() {
  ip netns exec "$lab-scan" env "${env1[@]}" node dist/cli/main.js run "$job1" --no-progress >/dev/null 2>&1 &
  local p1=$!
  ip netns exec "$sc2" env "${env2[@]}" node dist/cli/main.js run "$job2" --no-progress >/dev/null 2>&1 &
  local p2=$!
  wait "$p1" "$p2"
}
for i in $(seq "$rounds"); do
  log=$(mktemp)
  sampled "$log" sh -c 'ns=$1 job=$2; shift 2; ip netns exec "$ns" env "$@" node dist/cli/main.js run "$job" --no-progress >/dev/null 2>&1' - "$lab-scan" "$job1" "${env1[@]}"
  single=$(rate "$log" 2)
  sampled "$log" both
  echo "round $i: one worker $single/s; two workers $(rate "$log" 2)/s + $(rate "$log" 3)/s, together $(rate "$log" 0)/s, ratio $(awk -v s="$single" -v t="$(rate "$log" 0)" 'BEGIN { printf "%.2f", t / s }')"
  rm -f "$log"
done
