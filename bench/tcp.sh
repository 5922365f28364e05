#!/usr/bin/env bash
# Ferry as a TCP proxy (a Gateway API TCP listener and TCPRoute) against HAProxy `mode tcp`
# and nginx `stream`, and against the backend directly, in one run:
#
#   bench/tcp.sh [ROUNDS=3] [SECONDS=8]
#
# - throughput: iperf3 sends 1 GiB through the proxy to an iperf3 server (one stream);
# - connections/s: wrk with `Connection: close` (one TCP connection per request, 50 at once)
#   to `ferry echo --fixed-body 64`, so every request is a connect, a relayed exchange and a
#   close through the proxy.
# Each proxy runs one worker on CPU 0 with no access log; load generators and backends share
# CPU 1. Rounds rotate the order of the targets; the table shows medians. Writes
# bench/results/tcp.md.
set -euo pipefail
rounds="${1:-3}"
seconds="${2:-8}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk; need nginx nginx; need haproxy haproxy; need iperf3 iperf3; need curl curl
stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$stream_module" ] || { apt-get update -qq && apt-get install -y -qq libnginx-mod-stream >/dev/null; }
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; pkill -f "nginx -c $work" || true; rm -rf "$work"; }
trap cleanup EXIT

iperf_backend=19300 echo_backend=19301
# Two ports per proxy: the iperf3 one and the echo one.
declare -A base=([direct]=0 [ferry]=19310 [haproxy]=19320 [nginx]=19330)
iperf_port() { [ "$1" = direct ] && echo "$iperf_backend" || echo "${base[$1]}"; }
echo_port() { [ "$1" = direct ] && echo "$echo_backend" || echo "$((base[$1] + 1))"; }

taskset -c 1 iperf3 --server --port "$iperf_backend" >/dev/null 2>&1 & pids+=($!)
taskset -c 1 "$ferry" echo --listen "127.0.0.1:$echo_backend" --fixed-body 64 >/dev/null 2>&1 & pids+=($!)

# --- configurations -------------------------------------------------------------------
mkdir -p "$work/ferry"
service() { # name port
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: bench}
spec: {ports: [{name: tcp, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1, namespace: bench, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: tcp, port: $2}]
endpoints: [{addresses: ["127.0.0.1"]}]
YAML
}
tcp_route() { # name listener service
  cat <<YAML
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: $1, namespace: bench}
spec:
  parentRefs: [{name: edge, sectionName: $2}]
  rules: [{backendRefs: [{name: $3, port: 80}]}]
YAML
}
{
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: bench}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: iperf, port: $(iperf_port ferry), protocol: TCP}
  - {name: echo, port: $(echo_port ferry), protocol: TCP}
YAML
  service iperf "$iperf_backend"
  service echo "$echo_backend"
  tcp_route iperf iperf iperf
  tcp_route echo echo echo
} >"$work/ferry/config.yaml"

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  # Two descriptors a connection: within this machine's 20,000 open files.
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen iperf
  bind 127.0.0.1:$(iperf_port haproxy)
  server backend 127.0.0.1:$iperf_backend
listen echo
  bind 127.0.0.1:$(echo_port haproxy)
  server backend 127.0.0.1:$echo_backend
CONF

cat >"$work/nginx.conf" <<CONF
load_module $stream_module;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 20000; }
stream {
  server { listen 127.0.0.1:$(iperf_port nginx); proxy_pass 127.0.0.1:$iperf_backend; }
  server { listen 127.0.0.1:$(echo_port nginx); proxy_pass 127.0.0.1:$echo_backend; }
}
CONF

# --- running ----------------------------------------------------------------------------
wait_port() { # port: until something accepts on it (10 s at most)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

start() { # target
  case "$1" in
    direct) ;;
    ferry)
      taskset -c 0 "$ferry" gateway --concurrency 1 --config "$work/ferry" --admin 127.0.0.1:19002 \
        --bind-address 127.0.0.1 --access-log off --log warn >/dev/null 2>"$work/ferry.err" &
      until curl -fs http://127.0.0.1:19002/ready >/dev/null; do sleep 0.1; done ;;
    haproxy) taskset -c 0 haproxy -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
    nginx) taskset -c 0 nginx -c "$work/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & ;;
  esac
  [ "$1" = direct ] || { wait_port "$(iperf_port "$1")"; wait_port "$(echo_port "$1")"; }
}

stop() {
  case "$1" in
    ferry) pkill -f "gateway --concurrency 1 --config $work/ferry" || true ;;
    haproxy) pkill -f "haproxy -f $work/haproxy.cfg" || true ;;
    nginx) kill "$(cat "$work/nginx.pid")" 2>/dev/null || true ;;
  esac
  sleep 0.5
}

# Gbit/s of 1 GiB sent through the target. iperf3's server takes one test at a time and
# answers "busy" (a JSON without results) until the previous one is torn down: tried 3 times.
throughput() {
  local result
  for _ in 1 2 3; do
    result="$(taskset -c 1 iperf3 --client 127.0.0.1 --port "$(iperf_port "$1")" --bytes 1G --json \
      | python3 -c 'import json,sys
end = json.load(sys.stdin).get("end", {}).get("sum_received")
print(round(end["bits_per_second"] / 1e9, 2) if end else "")')" || true
    [ -n "$result" ] && { echo "$result"; return 0; }
    sleep 1
  done
  echo "iperf3 through $1 failed 3 times" >&2
  return 1
}

# New connections per second (one request each).
connections() {
  taskset -c 1 wrk -t 1 -c 50 -d "${seconds}s" -H 'Connection: close' \
    "http://127.0.0.1:$(echo_port "$1")/" | awk '/Requests\/sec/ {print int($2)}'
}

targets=(direct ferry haproxy nginx)
declare -A gbps conns
for round in $(seq 1 "$rounds"); do
  shift_by=$(( (round - 1) % ${#targets[@]} ))
  order=("${targets[@]:$shift_by}" "${targets[@]:0:$shift_by}")
  for target in "${order[@]}"; do
    start "$target"
    gbps[$target]+="$(throughput "$target") "
    conns[$target]+="$(connections "$target") "
    stop "$target"
    echo "round $round $target: ${gbps[$target]}Gbit/s; ${conns[$target]}conn/s" >&2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
{
  echo "# TCP proxying: 1 GiB throughput and connections/s ($(date -u +%F), $rounds rounds, ${seconds} s)"
  echo
  echo "One worker on CPU 0 per proxy; iperf3, wrk and the backends on CPU 1. Medians."
  echo
  echo "| target | 1 GiB throughput Gbit/s | vs HAProxy | connections/s | vs HAProxy |"
  echo "|---|---|---|---|---|"
  hg="$(echo "${gbps[haproxy]}" | median)" hc="$(echo "${conns[haproxy]}" | median)"
  for target in "${targets[@]}"; do
    g="$(echo "${gbps[$target]}" | median)" c="$(echo "${conns[$target]}" | median)"
    rg="$(awk -v a="$g" -v b="$hg" 'BEGIN {printf "%.2fx", a / b}')"
    rc="$(awk -v a="$c" -v b="$hc" 'BEGIN {printf "%.2fx", a / b}')"
    echo "| $target | $g | $rg | $c | $rc |"
  done
} | tee "$out/tcp.md"
