#!/usr/bin/env bash
# The whole test suite: type check, then every unit and integration test (real redis-server, BullMQ, raw
# sockets in network namespaces the tests create and remove). Needs root for the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
npm run --silent typecheck
# One test file at a time: the integration tests start process trees and namespaces; on 2 cores running them
# side by side only makes them slower.
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
status=0
node --experimental-vm-modules node_modules/jest/bin/jest.js --runInBand --json --outputFile="$summary" "$@" || status=$?
# The plain closing line CI reads.
node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed`)' "$summary" || true
exit "$status"
