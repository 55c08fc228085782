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
