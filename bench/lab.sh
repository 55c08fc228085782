# Sourced by the bench scripts: builds widescan, brings up a fresh lab without a peer instance, named
# "$1" plus a random number, and tears it down on exit. Sets $lab.
bench_lab() {
  bash scripts/setup.sh >/dev/null
  lab=$1$((RANDOM % 1000))
  trap 'node dist/cli/main.js testbed down --name "$lab" >/dev/null' EXIT
  node dist/cli/main.js testbed up --name "$lab" --no-peer >/dev/null
}

# Writes a one-target lab job (full strategy) to a temporary file and prints its path.
bench_job() { # name prefix packetsPerSecond replyTimeoutSeconds
  local file
  file=$(mktemp --suffix=.yaml)
  cat >"$file" <<YAML
apiVersion: widescan.dev/v1alpha1
kind: WidescanJob
metadata: {name: $1}
spec:
  targets: [{prefix: "$2", strategy: full}]
  allowNonGlobal: true
  rate: {packetsPerSecond: $3}
  probe: {replyTimeoutSeconds: $4}
YAML
  echo "$file"
}

# Sets the array wenv to the worker environment that IO=packet (the packet path) and SENDERS=N (N sender
# threads) ask for. Arguments: the scanner's link to the responder, the responder's end of it (whose MAC is
# the router's), the scanner's address on it; default the lab's scanner link.
bench_wenv() {
  local link=${1:-$lab-to-resp} far=${2:-$lab-to-scan} source=${3:-fd00:5ca:1ab:f001::1}
  wenv=()
  case "${IO:-}" in
    '') ;;
    packet)
      wenv=(WIDESCAN_IO=packet "WIDESCAN_PACKET_INTERFACE=$link" "WIDESCAN_PACKET_SOURCE=$source"
        "WIDESCAN_PACKET_ROUTER_MAC=$(ip -n "$lab-resp" link show "$far" | awk '/ether/ { print $2 }')")
      ;;
    *) echo "IO=$IO: unknown; use IO=packet or leave it unset" >&2; exit 2 ;;
  esac
  if [ -n "${SENDERS:-}" ]; then wenv+=("WIDESCAN_SENDER_THREADS=$SENDERS"); fi
}
