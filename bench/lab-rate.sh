#!/usr/bin/env bash
# Probe rate and reply capture of `widescan run` in the namespace lab: one worker scans 2^20 addresses of the
# lab's aliased /64 (every address answers), uncapped (rate 10^7). Prints the run's summary line per round.
# Usage: bash bench/lab-rate.sh [rounds=3] [log2 targets=20]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bits=${2:-20}
bash scripts/setup.sh >/dev/null
lab=br$((RANDOM % 1000))
trap 'node dist/cli/main.js testbed down --name "$lab" >/dev/null' EXIT
node dist/cli/main.js testbed up --name "$lab" --no-peer >/dev/null
job=$(mktemp --suffix=.yaml)
cat >"$job" <<YAML
apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: rate}
spec:
  targets: [{prefix: "fd00:5ca:1ab:1aa::/$((128 - bits))", strategy: full}]
  allowNonGlobal: true
  rate: {packetsPerSecond: 10000000}
  probe: {replyTimeoutSeconds: 2}
YAML
for i in $(seq "$rounds"); do
  line=$(ip netns exec "$lab-scan" node dist/cli/main.js run "$job" --no-progress 2>/dev/null | grep -E '^(Succeeded|Failed)')
  probes=$(sed -E 's/^[A-Za-z]+: ([0-9]+) probes.*/\1/' <<<"$line")
  valid=$(sed -E 's/.* ([0-9]+) valid replies.*/\1/' <<<"$line")
  echo "round $i: $line"
  echo "round $i: capture $(awk -v v="$valid" -v p="$probes" 'BEGIN { printf "%.4f", v / p }')"
done
