#!/usr/bin/env bash
# What AuthorizationPolicy costs per request at a gateway: user-space instructions per
# request (callgrind, no timing noise) with no policy, 10 rules and 1,000 rules, on Ferry's
# HTTP/1 loop proxying `ferry echo --fixed-body 64` over keep-alive with one worker.
#
#   bench/authz-cost.sh [REQUESTS=20000]
#
# The policies are one ALLOW AuthorizationPolicy selecting the gateway (root namespace,
# `istio: ingressgateway`) with N rules, each a path prefix; only the last one matches the
# requests. Rules whose paths fix the first segment (`/p7/*`) are indexed by it (see
# gateway/src/proxy/authz_index.rs), so a request evaluates those for its own segment and
# the ones that can match any path; rules without a fixed segment (`*.js`, `/p7*`, no
# paths) are each evaluated, about 86 instructions apiece. Procedure as
# bench/callgrind.sh: warm-up 2,000 requests, zero the counters, REQUESTS requests, dump;
# then req/s of each configuration outside valgrind (three rotated rounds, median).
# Writes bench/results/authz-cost.md. Target (issue: mesh security II): <= 5% more
# instructions at 10 rules than with none.
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

backend=19400 port=19480
"$ferry" echo --listen "127.0.0.1:$backend" --fixed-body 64 >/dev/null 2>&1 & pids+=($!)

config() { # rules -> a config directory
  local dir="$work/rules-$1"
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
  if [ "$1" -gt 0 ]; then
    {
      echo "---"
      echo "apiVersion: security.istio.io/v1"
      echo "kind: AuthorizationPolicy"
      echo "metadata: {name: paths, namespace: istio-system}"
      echo "spec:"
      echo "  selector: {matchLabels: {istio: ingressgateway}}"
      echo "  rules:"
      for i in $(seq $(($1 - 1))); do
        echo "    - to: [{operation: {paths: [\"/p$i/*\"], methods: [GET]}}]"
      done
      echo "    - to: [{operation: {paths: [\"/*\"], methods: [GET]}}]"
    } >>"$dir/config.yaml"
  fi
  echo "$dir"
}

wait_ok() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2; return 1
}
load() { h2load --h1 -n "$1" -c 16 "$2" >/dev/null 2>&1; }

declare -A instructions
for rules in 0 10 1000; do
  dir="$(config "$rules")"
  url="http://127.0.0.1:$port/"
  MIMALLOC_ARENA_EAGER_COMMIT=0 valgrind --tool=callgrind \
    --callgrind-out-file="$work/r$rules.%p.out" "$ferry" gateway --concurrency 1 --config "$dir" \
    --admin 127.0.0.1:19401 --bind-address 127.0.0.1 --access-log off --log warn \
    >/dev/null 2>"$work/r$rules.valgrind" &
  pid=$!
  wait_ok "$url"
  load 2000 "$url"
  callgrind_control -z "$pid" >/dev/null
  load "$requests" "$url"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  dump="$(ls -t "$work"/r"$rules".*.out.* | head -1)"
  total="$(awk '/^totals:/ {print $2}' "$dump")"
  instructions[$rules]=$((total / requests))
  echo "$rules rules: ${instructions[$rules]} instructions per request" >&2
done

# Requests per second on one worker, the gateway outside valgrind: three rounds rotated
# over the configurations, median per configuration (h2load, 32 keep-alive clients).
declare -A rates
for rules in 0 10 1000; do rates[$rules]=""; done
for round in 1 2 3; do
  for rules in 0 10 1000; do
    dir="$work/rules-$rules"
    "$ferry" gateway --concurrency 1 --config "$dir" --admin 127.0.0.1:19401 \
      --bind-address 127.0.0.1 --access-log off --log warn >/dev/null 2>&1 &
    pid=$!
    wait_ok "http://127.0.0.1:$port/"
    load 5000 "http://127.0.0.1:$port/"
    rate="$(h2load --h1 -n 100000 -c 32 "http://127.0.0.1:$port/" 2>/dev/null | awk '/^finished in/ {print int($4)}')"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rates[$rules]="${rates[$rules]} $rate"
    echo "round $round, $rules rules: $rate req/s" >&2
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | sed -n 2p; }

{
  echo "# AuthorizationPolicy cost at a gateway ($(date -u +%Y-%m-%d), $requests keep-alive requests, worst case: every rule evaluated)"
  echo
  echo "| rules | instructions / request | vs no policy | req/s, one worker (median of 3) | vs no policy |"
  echo "|---|---|---|---|---|"
  for rules in 0 10 1000; do
    r="$(median "${rates[$rules]}")"; r0="$(median "${rates[0]}")"
    echo "| $rules | ${instructions[$rules]} | $(awk -v a="${instructions[$rules]}" -v b="${instructions[0]}" 'BEGIN {printf "%+.1f%%", (a - b) * 100 / b}') | $r | $(awk -v a="$r" -v b="$r0" 'BEGIN {printf "%.2fx", a / b}') |"
  done
} | tee "$out/authz-cost.md"
