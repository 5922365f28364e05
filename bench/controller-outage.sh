#!/usr/bin/env bash
# The controller unreachable for 5 minutes (packets dropped, nothing closed) while a gateway
# in controller mode serves: the test of tests/resilience.rs with a longer outage. Prints the
# requests served from the last snapshot during it (none may fail) and how long the resync
# took once the link was back. Needs the Kubernetes test tools (tests/setup.sh).
#
#   bench/controller-outage.sh [SECONDS=300]
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_OUTAGE_SECONDS="${1:-300}" cargo test --locked --test resilience \
  a_silent_controller_is_noticed -- --nocapture 2>&1 | grep -E "outage|resynced|test result"
