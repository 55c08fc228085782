#!/usr/bin/env bash
# Memory of planner (the `run` process), worker, listener and Redis over a job of 2^BITS targets (default
# 2^24), sampled every 10 s: flat lines mean memory does not grow with the job. The targets are dead lab
# addresses (…:200::/104 routed to the responders, which drop them), so this measures the scan path only.
# IO=packet, SENDERS=N: the worker's send path and sender threads (see bench_wenv in bench/lab.sh).
# Usage: [IO=packet] [SENDERS=N] bash bench/flat-memory.sh [bits=24] [rate=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
bits=${1:-24}
rate=${2:-100000}
source bench/lab.sh
bench_lab bm
job=$(bench_job flat "fd00:5ca:1ab:200::/$((128 - bits))" "$rate" 1)
bench_wenv
ip netns exec "$lab-scan" env "${wenv[@]}" node dist/cli/main.js run "$job" --no-progress >/tmp/flat-memory.out 2>/tmp/flat-memory.err &
runpid=$!
rss() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo -; }
child() { for c in $(cat /proc/"$runpid"/task/*/children 2>/dev/null); do if grep -qa "$1" /proc/"$c"/cmdline 2>/dev/null; then echo "$c"; fi; done | head -1; }
printf '%6s %10s %12s %12s %12s %14s\n' 't(s)' 'probes' 'planner MiB' 'worker MiB' 'listener MiB' 'redis used MiB'
start=$(date +%s)
while kill -0 "$runpid" 2>/dev/null; do
  sleep 10
  w=$(child worker/main.js); l=$(child listener/main.js); r=$(child redis-server)
  [ -n "$r" ] || continue
  # redis-server retitles itself "redis-server 127.0.0.1:PORT"
  port=$(tr '\0' ' ' </proc/"$r"/cmdline | sed -E 's/.*:([0-9]+).*/\1/')
  used=$(ip netns exec "$lab-scan" redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ { printf "%.1f", $2 / 1048576 }' || true)
  probes=$(ip netns exec "$lab-scan" redis-cli -p "$port" hget widescan:job:flat:counters probesSent || true)
  printf '%6d %10s %12s %12s %12s %14s\n' $(($(date +%s) - start)) "${probes:-0}" "$(rss "$runpid")" "$(rss "$w")" "$(rss "$l")" "$used"
done
wait "$runpid" || true
grep -E '^(Succeeded|Failed)' /tmp/flat-memory.out
