#!/usr/bin/env bash
# The demo: build a private IPv6 lab of network namespaces, scan it with examples/lab.yaml, print the peers
# found and how they compare with the lab's ground truth, tear the lab down. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lab=demo$((RANDOM % 10))
widescan() { node dist/cli/main.js "$@"; }
trap 'widescan testbed down --name "$lab" >/dev/null' EXIT
widescan testbed up --name "$lab"
echo
ip netns exec "$lab-scan" node dist/cli/main.js run examples/lab.yaml \
  --network-key-file ".testbed/$lab/network.key" --output "peers.ndjson"
echo
node scripts/compare-ground-truth.mjs examples/lab.yaml ".testbed/$lab/ground-truth.json" peers.ndjson
widescan testbed status --name "$lab"
