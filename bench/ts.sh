#!/usr/bin/env bash
# Runs a TypeScript bench: compiles it, what it imports and the CPU backend's thread entry (which threads
# load by URL, not by import) with tsc into a temporary directory, then runs it from the repository root.
#   bash bench/ts.sh bench/NAME.ts [arguments of the bench…]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=$1
shift
out=$(mktemp -d /tmp/widescan-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
npx tsc --outDir "$out" --rootDir . --target es2022 --lib es2024 --module nodenext --moduleResolution nodenext --strict \
  --skipLibCheck --esModuleInterop --resolveJsonModule --types node lib/raw-socket.d.ts "$bench" worker/cpu-thread.ts
# The compiled files need ESM and this checkout's node_modules.
echo '{"type":"module"}' >"$out/package.json"
ln -s "$PWD/node_modules" "$out/node_modules"
node "$out/${bench%.ts}.js" "$@"
