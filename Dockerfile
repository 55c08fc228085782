# syntax=docker/dockerfile:1
# One image for every widescan component; the first argument picks it:
#   docker build -t widescan --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm widescan                         # = widescan --help
#   docker run --rm widescan widescan peers --help   # the CLI
#   docker run … widescan operator|worker|listener|bootstrap   (settings from the environment; see the README)
#
# Base: Node.js 22 LTS ("Jod") on Debian 13 (trixie) slim, pinned to a full version. Not Node 24/26: the
# raw-socket dependency pins nan 2.19.*, which does not compile against their V8 (nan 2.30 does: move the
# base together with an override to it). Both stages use the same BASE, so the native addons are compiled against the
# glibc and Node ABI they run with.
#
# GPU workers run the same image: Dawn (npm package webgpu) needs glibc >= 2.38 (trixie has 2.41) and the
# Vulkan loader (libvulkan1, installed below); the NVIDIA container toolkit mounts the driver's Vulkan ICD
# from the host when NVIDIA_DRIVER_CAPABILITIES includes `graphics`, which the operator sets on the GPU pool.
ARG BASE=node:22.23.3-trixie-slim

FROM ${BASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# node-gyp's toolchain, for the two native addons; this stage only. Not version-pinned: the pinned BASE fixes
# the Debian release, and exact Debian revisions disappear from the archive with each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# node-gyp compiles against the headers this Node ships under /usr/local/include/node (no download).
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
# `npm install`, not `npm ci`: the lock records only some platforms' optional binaries (msgpackr-extract, …),
# which `npm ci` refuses as "out of sync"; install follows the same lock. --ignore-scripts, then the one
# dependency install script package.json's `allowScripts` approves (raw-socket's node-gyp build), so the
# policy holds whichever npm version the base ships.
RUN npm install --no-audit --no-fund --ignore-scripts \
    && npm rebuild raw-socket
COPY tsconfig.json tsconfig.build.json ./
COPY native/ native/
COPY lib/ lib/
COPY operator/ operator/
COPY worker/ worker/
COPY listener/ listener/
COPY bootstrap/ bootstrap/
COPY cli/ cli/
COPY testbed/ testbed/
# Our sendmmsg/recvmmsg addon through the root install script (whose `|| echo` fallback suits developer
# machines; an image must have the addon, hence `test -f`), TypeScript to dist/ (with the panel's static
# files), then the dev dependencies go, and the webgpu package's Dawn builds for other platforms (~130 MB).
RUN npm run install \
    && test -f native/build/Release/icmp6.node \
    && npm run build \
    && npm prune --omit=dev --no-audit --no-fund \
    && keep="$(node -p 'process.platform + "-" + process.arch')" \
    && test -f "node_modules/webgpu/dist/${keep}/dawn.node" \
    && find node_modules/webgpu/dist -mindepth 1 -maxdepth 1 -type d ! -name "${keep}" -exec rm -rf {} +

FROM ${BASE}
ARG BASE
ARG VERSION=0.1.0
ARG REVISION=""
LABEL org.opencontainers.image.title="widescan" \
      org.opencontainers.image.description="Kubernetes-native, distributed IPv6 discovery scanner" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"
ENV NODE_ENV=production
# The Vulkan loader, through which Dawn reaches the GPU driver (GPU workers; harmless elsewhere), and iproute2,
# whose `ip` the packet path reads the default route and neighbour table with (not pinned, as above). The
# default user: unprivileged, numeric (so runAsNonRoot can verify it). The files below stay
# root-owned, so the process cannot change its own code.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvulkan1 iproute2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 widescan \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin widescan
WORKDIR /app
# package.json: the CLI's --version, and how lib/icmp6native.ts finds native/build/Release/icmp6.node.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/dist/ dist/
COPY --from=build /app/native/build/Release/icmp6.node native/build/Release/
USER 10001:10001
# Raw sockets (worker, listener) with only NET_RAW: run those two as uid 0 with every other capability
# dropped and no privilege escalation; in Kubernetes
#   securityContext: {runAsUser: 0, runAsNonRoot: false, allowPrivilegeEscalation: false,
#                     readOnlyRootFilesystem: true, capabilities: {drop: [ALL], add: [NET_RAW]}}
# with Docker: --user 0 --cap-drop ALL --cap-add NET_RAW --security-opt no-new-privileges --network host.
# Uid 0 holds exactly its bounding set, NET_RAW: no CAP_DAC_OVERRIDE, CAP_SETUID or any other, and nothing to
# write on a read-only root filesystem. A non-root uid never holds an added capability (Kubernetes sets no
# ambient ones) unless its binary has a file capability, and /usr/local/bin/node deliberately has none: a
# binary with an effective file capability cannot be executed at all where the bounding set lacks it (execve
# fails with EPERM), which would break the operator and bootstrap pods that drop ALL and run this same node.
# Everything except worker and listener runs as 10001 with no capability.
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (operator, bootstrap, and the metrics port of the
# worker and listener).
HEALTHCHECK NONE
# No init process: node is PID 1, every long-running component handles SIGTERM and SIGINT itself (shutting
# down cleanly, exit 0), and `widescan run` waits for the processes it forks. `docker run --init` adds one.
ENTRYPOINT ["node", "/app/dist/cli/entrypoint.js"]
CMD ["widescan", "--help"]
