#!/usr/bin/env bash
# The operator's reconcile cost (bench/reconcile.ts): compiles it and what it imports with tsc into a
# temporary directory, then runs it from the repository root. Arguments go to the bench:
#   --jobs 0,1,100,1000   job counts of part 1 (one fresh API server, Redis and operator each)
#   --steady 10           seconds of steady state measured per job count
#   --drain 24            seconds the 2^20-shard job is drained by a counting worker (part 2)
#   --no-big              skip part 2
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/widescan-bench-reconcile.XXXXXX)
trap 'rm -rf "$out"' EXIT
npx tsc --outDir "$out" --rootDir . --target es2022 --module nodenext --moduleResolution nodenext --strict \
  --skipLibCheck --esModuleInterop --resolveJsonModule --types node lib/raw-socket.d.ts bench/reconcile.ts
# The compiled files need ESM and this checkout's node_modules.
echo '{"type":"module"}' >"$out/package.json"
ln -s "$PWD/node_modules" "$out/node_modules"
node "$out/bench/reconcile.js" "$@"
