#!/usr/bin/env bash
# Swap storm: 1,000 configuration swaps (every 10th adds or removes a listener) while
# clients send requests without pause; prints requests served, failed (must be 0) and how
# long each change took to be in effect. Runs tests/reload.rs with FERRY_SWAPS.
#
#   bench/swap-storm.sh [SWAPS=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SWAPS="${1:-1000}" cargo test --quiet --test reload -- --nocapture 2>&1 | grep -E "^reload:|test result|panicked"
