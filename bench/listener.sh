#!/usr/bin/env bash
# The listener's CPU cost per reply (bench/listener.ts), no sockets.
#   bash bench/listener.sh [rounds=5] [replies=1048576]
exec bash "$(dirname "$0")/ts.sh" bench/listener.ts "$@"
