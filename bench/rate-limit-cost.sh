#!/usr/bin/env bash
# What a local rate limit costs per request at a gateway: user-space instructions per
# request (callgrind, no timing noise) and req/s on one worker, with no limit and with a
# LocalRateLimitPolicy keyed by route, by client address and by a header — each so high that
# nothing is refused (the cost of counting, not of refusing). Ferry's HTTP/1 loop proxies
# `ferry echo --fixed-body 64` over keep-alive, as bench/authz-cost.sh (same procedure:
# warm-up 2,000 requests, zero the counters, REQUESTS requests, dump; then three rotated
# rounds of h2load outside valgrind, median). Writes bench/results/rate-limit-cost.md.
#
#   bench/rate-limit-cost.sh [REQUESTS=20000]
set -euo pipefail
requests="${1:-20000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need valgrind valgrind; need h2load nghttp2-client; need curl curl
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

backend=19500 port=19580
"$ferry" echo --listen "127.0.0.1:$backend" --fixed-body 64 >/dev/null 2>&1 & pids+=($!)
keys=(none Route ClientIP Header)

config() { # key -> a config directory
  local dir="$work/$1"
  mkdir -p "$dir"
  cat >"$dir/config.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: $port, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: v1
kind: Service
metadata: {name: small, namespace: bench}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: small, namespace: bench, labels: {kubernetes.io/service-name: small}}
addressType: IPv4
ports: [{name: http, port: $backend}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: main, namespace: bench}
spec: {hosts: ["*"], gateways: [gw], http: [{route: [{destination: {host: small}}]}]}
YAML
  if [ "$1" != none ]; then
    cat >>"$dir/config.yaml" <<YAML
---
apiVersion: policy.ferry.dev/v1alpha1
kind: LocalRateLimitPolicy
metadata: {name: limit, namespace: bench}
spec:
  targetRefs: [{group: networking.istio.io, kind: VirtualService, name: main}]
  limit: {requests: 100000000, unit: Second}
  key: {type: $1, header: user-agent}
YAML
  fi
}
for key in "${keys[@]}"; do config "$key"; done

wait_ok() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2; return 1
}
load() { h2load --h1 -n "$1" -c 16 "$2" >/dev/null 2>&1; }
# Run in the background: `exec` keeps $! the proxy's own pid (callgrind_control needs it).
gateway() { exec "$@" gateway --concurrency 1 --config "$work/$key" --admin 127.0.0.1:19501 \
  --bind-address 127.0.0.1 --access-log off --log warn; }

declare -A instructions
url="http://127.0.0.1:$port/"
for key in "${keys[@]}"; do
  (MIMALLOC_ARENA_EAGER_COMMIT=0 gateway valgrind --tool=callgrind \
    --callgrind-out-file="$work/$key.%p.out" "$ferry") >/dev/null 2>"$work/$key.valgrind" &
  pid=$!
  wait_ok "$url"
  load 2000 "$url"
  callgrind_control -z "$pid" >/dev/null
  load "$requests" "$url"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  dump="$(ls -t "$work/$key".*.out.* | head -1)"
  total="$(awk '/^totals:/ {print $2}' "$dump")"
  instructions[$key]=$((total / requests))
  echo "$key: ${instructions[$key]} instructions per request" >&2
done

declare -A rates
for key in "${keys[@]}"; do rates[$key]=""; done
for round in 1 2 3; do
  for key in "${keys[@]}"; do
    (gateway "$ferry") >/dev/null 2>&1 &
    pid=$!
    wait_ok "$url"
    load 5000 "$url"
    rate="$(h2load --h1 -n 100000 -c 32 "$url" 2>/dev/null | awk '/^finished in/ {print int($4)}')"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rates[$key]="${rates[$key]} $rate"
    echo "round $round, $key: $rate req/s" >&2
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | sed -n 2p; }

{
  echo "# Local rate limit cost at a gateway ($(date -u +%Y-%m-%d), $requests keep-alive requests, none refused)"
  echo
  echo "| limit key | instructions / request | vs no limit | req/s, one worker (median of 3) | vs no limit |"
  echo "|---|---|---|---|---|"
  for key in "${keys[@]}"; do
    r="$(median "${rates[$key]}")"; r0="$(median "${rates[none]}")"
    echo "| $key | ${instructions[$key]} | $(awk -v a="${instructions[$key]}" -v b="${instructions[none]}" 'BEGIN {printf "%+.1f%%", (a - b) * 100 / b}') | $r | $(awk -v a="$r" -v b="$r0" 'BEGIN {printf "%.2fx", a / b}') |"
  done
} | tee "$out/rate-limit-cost.md"
