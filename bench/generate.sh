#!/usr/bin/env bash
# Generator backends side by side (bench/generate.ts).
#   bash bench/generate.sh [rounds=5] [positions per round=1048576] [batch=4096]
exec bash "$(dirname "$0")/ts.sh" bench/generate.ts "$@"
