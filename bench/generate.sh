#!/usr/bin/env bash
# Generator backends side by side (bench/generate.ts): compiles it, what it imports and the CPU backend's
# thread entry with tsc into a temporary directory, then runs it from the repository root.
#   bash bench/generate.sh [rounds=5] [positions per round=1048576] [batch=4096]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/widescan-bench-generate.XXXXXX)
trap 'rm -rf "$out"' EXIT
npx tsc --outDir "$out" --rootDir . --target es2022 --lib es2024 --module nodenext --moduleResolution nodenext --strict \
  --skipLibCheck --esModuleInterop --resolveJsonModule --types node bench/generate.ts worker/cpu-thread.ts
echo '{"type":"module"}' >"$out/package.json"
ln -s "$PWD/node_modules" "$out/node_modules"
node "$out/bench/generate.js" "$@"
