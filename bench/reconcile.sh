#!/usr/bin/env bash
# The operator's reconcile cost (bench/reconcile.ts). Arguments go to the bench:
#   --jobs 0,1,100,1000   job counts of part 1 (one fresh API server, Redis and operator each)
#   --steady 10           seconds of steady state measured per job count
#   --drain 24            seconds the 2^20-shard job is drained by a counting worker (part 2)
#   --no-big              skip part 2
exec bash "$(dirname "$0")/ts.sh" bench/reconcile.ts "$@"
