#!/usr/bin/env bash
# Starts the example's backends (`ferry echo` processes standing for the Pods) and a Ferry
# gateway serving this folder. Ctrl-C stops everything. Extra arguments go to the gateway.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ferry="${FERRY:-$root/target/debug/ferry}"
[ -x "$ferry" ] || (cd "$root" && cargo build --quiet)
trap 'kill 0' EXIT
"$ferry" echo --listen 127.0.0.21:9080 --name store --namespace demo &
"$ferry" echo --listen 127.0.0.22:9080 --name api --namespace demo &
"$ferry" echo --listen 127.0.0.23:9080 --name api-beta --namespace demo &
"$ferry" gateway --config "$here" "$@"
