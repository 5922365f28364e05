#!/usr/bin/env bash
# Starts the example's backends (two `ferry echo` processes standing for the v1 and v2 Pods)
# and a Ferry gateway serving this folder. Ctrl-C stops everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ferry="${FERRY:-$root/target/debug/ferry}"
[ -x "$ferry" ] || (cd "$root" && cargo build --quiet)
trap 'kill 0' EXIT
"$ferry" echo --listen 127.0.0.11:9080 --name weather-v1 --namespace weather &
"$ferry" echo --listen 127.0.0.12:9080 --name weather-v2 --namespace weather &
"$ferry" gateway --config "$here" "$@"
