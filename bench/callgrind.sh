#!/usr/bin/env bash
# Per-request cost without timing noise: user-space instructions (callgrind), heap
# allocations (ferry: calls into the allocator) and syscalls (strace -c), for ferry's HTTP/1
# loop, ferry with --http1-fallback (Pingora's path), nginx and HAProxy, all proxying the same
# `ferry echo --fixed-body 64` backend over keep-alive with one worker.
#
#   bench/callgrind.sh [REQUESTS=20000]
#
# Procedure, the same for every proxy: start it under valgrind --tool=callgrind, send 2,000
# requests of warm-up (h2load --h1, 16 connections), zero the counters (callgrind_control -z),
# send REQUESTS requests, dump (callgrind_control -d) and divide the totals by REQUESTS. The
# syscall count is a second run without valgrind: strace -c -f attached during REQUESTS
# requests. Writes bench/results/callgrind.md.
set -euo pipefail
requests="${1:-20000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need valgrind valgrind; need strace strace; need h2load nghttp2-client; need nginx nginx
need haproxy haproxy; need curl curl
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; pkill -f "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

backend=19300
declare -A port=([ferry]=19380 [ferry-pingora]=19381 [nginx]=19382 [haproxy]=19383)
"$ferry" echo --listen "127.0.0.1:$backend" --fixed-body 64 >/dev/null 2>&1 & pids+=($!)

mkdir -p "$work/ferry"
cat >"$work/ferry/config.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: ${port[ferry]}, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: ${port[ferry-pingora]}, name: http2, protocol: HTTP}, hosts: ["*"]}
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
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: small}}]}]
YAML
cat >"$work/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream small { server 127.0.0.1:$backend; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port[nginx]};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://small; }
  }
}
CONF
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:${port[haproxy]}
  default_backend small
backend small
  server s 127.0.0.1:$backend
CONF

command_of() { # target -> the proxy's command line
  case "$1" in
    ferry) echo "$ferry gateway --concurrency 1 --config $work/ferry --admin 127.0.0.1:19301 --bind-address 127.0.0.1 --access-log off --log warn" ;;
    ferry-pingora) echo "$ferry gateway --concurrency 1 --config $work/ferry --admin 127.0.0.1:19301 --bind-address 127.0.0.1 --access-log off --log warn --http1-fallback" ;;
    nginx) echo "nginx -c $work/nginx.conf" ;;
    haproxy) echo "haproxy -db -f $work/haproxy.cfg" ;;
  esac
}
wait_ok() { # url: until it answers 200 (60 s at most: valgrind starts slowly)
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2; return 1
}
load() { h2load --h1 -n "$1" -c 16 "$2" >/dev/null 2>&1; }

# callgrind's totals line of a dump file, and the calls into the allocator it records.
dump_counts() {
  python3 - "$1" <<'PY'
import re, sys
names, current, total, allocations = {}, None, 0, 0
alloc = re.compile(r"^(mi_malloc|mi_zalloc|mi_calloc|mi_realloc|mi_malloc_aligned|mi_zalloc_aligned|mi_new|malloc|calloc|realloc)$")
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("totals:"):
        total = int(line.split()[1])
    # Function names are compressed: "(id) name" the first time (in fn= or cfn=), "(id)" after.
    m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
    if m and m.group(2):
        names[m.group(1)] = m.group(2)
    if line.startswith("cfn="):
        current = names.get(m.group(1), "")
    elif line.startswith("calls=") and current is not None:
        if alloc.match(current):
            allocations += int(line.split("=")[1].split()[0])
        current = None
print(total, allocations)
PY
}

declare -A instructions allocs syscalls
for t in ferry ferry-pingora nginx haproxy; do
  url="http://127.0.0.1:${port[$t]}/"
  # shellcheck disable=SC2046 # the command line is words on purpose
  MIMALLOC_ARENA_EAGER_COMMIT=0 valgrind --tool=callgrind \
    --callgrind-out-file="$work/$t.%p.out" $(command_of "$t") >/dev/null 2>"$work/$t.valgrind" &
  pid=$!
  wait_ok "$url"
  load 2000 "$url"
  callgrind_control -z "$pid" >/dev/null
  load "$requests" "$url"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  dump="$(ls -t "$work/$t".*.out.* 2>/dev/null | head -1)"
  read -r total calls <<<"$(dump_counts "$dump")"
  instructions[$t]=$((total / requests))
  allocs[$t]="$(awk -v c="$calls" -v n="$requests" 'BEGIN {printf "%.1f", c / n}')"

  # shellcheck disable=SC2046
  $(command_of "$t") >/dev/null 2>&1 &
  pid=$!
  wait_ok "$url"
  load 2000 "$url"
  strace -c -f -p "$pid" -o "$work/$t.strace" &
  tracer=$!
  sleep 1
  load "$requests" "$url"
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  syscalls[$t]="$(awk -v n="$requests" '$NF == "total" {printf "%.2f", $4 / n}' "$work/$t.strace")"
  echo "$t: ${instructions[$t]} instructions, ${allocs[$t]} allocator calls, ${syscalls[$t]} syscalls per request" >&2
done

{
  echo "# Per-request cost ($(date -u +%Y-%m-%d), $requests keep-alive requests, 16 connections, 64 B responses)"
  echo
  echo "| proxy | instructions / request | allocator calls / request | syscalls / request |"
  echo "|---|---|---|---|"
  for t in ferry ferry-pingora nginx haproxy; do
    echo "| $t | ${instructions[$t]} | ${allocs[$t]} | ${syscalls[$t]} |"
  done
  echo
  echo "Allocator calls count calls into mimalloc (ferry) or malloc (nginx and HAProxy use"
  echo "their own pools, so theirs is not comparable). Syscalls: strace -c -f over the same"
  echo "number of requests, every thread of the process."
} | tee "$out/callgrind.md"
