#!/usr/bin/env bash
# Push-scale benchmark of the controller: 1,000 simulated proxies (HTTP/2 clients in one
# process) on 10 gateway scopes; each round changes an EndpointSlice every scope uses and
# times until the controller holds every proxy's ACK. Writes bench/results/push-scale.json.
#
#   bench/push-scale.sh [PROXIES=1000] [ROUNDS=20]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/bench/results"
cd "$root"
# The bench profile (no fat LTO) builds in a fraction of the release time; the push path is
# dominated by syscalls and JSON encoding, not by cross-crate inlining.
ulimit -n 65536 2>/dev/null || true
cargo run --quiet --profile bench -p ferry-controller --example push_scale -- "${1:-1000}" "${2:-20}" |
  tee bench/results/push-scale.json
