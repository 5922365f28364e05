#!/usr/bin/env bash
# Runs an example without a cluster: starts the `ferry echo` backends listed in the
# example's backends.txt (one per line: ADDRESS NAME [echo flags...]), then a Ferry gateway
# serving the example's manifests. Ctrl-C stops everything. Extra arguments go to the gateway.
#
#   examples/run-example.sh examples/weather-canary [--admin 127.0.0.1:15001]
set -euo pipefail
example="$(cd "${1:?usage: run-example.sh EXAMPLE_DIR [gateway args...]}" && pwd)"
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
ferry="${FERRY:-$root/target/debug/ferry}"
if [ ! -x "$ferry" ]; then
  # The dashboard's UI (--dashboard) is embedded at build time; without npm the binary
  # serves a page saying how to build it.
  if [ ! -f "$root/dashboard/dist/ui/index.html" ] && command -v npm >/dev/null; then
    bash "$root/dashboard/build.sh" >/dev/null
  fi
  (cd "$root" && cargo build --quiet)
fi
trap 'kill 0' EXIT
while read -r address name flags; do
  case "$address" in ''|'#'*) continue ;; esac
  flags="${flags//\{dir\}/$example}" # {dir}: the example's folder (certificate files)
  # shellcheck disable=SC2086 # flags are words on purpose
  "$ferry" echo --listen "$address" --name "$name" $flags &
done < "$example/backends.txt"
# On a laptop every client is local: they see the full x-ferry-cause the READMEs show (a
# gateway tells other clients the cause code alone).
"$ferry" gateway --config "$example" --full-cause-cidr 127.0.0.0/8 "$@"
