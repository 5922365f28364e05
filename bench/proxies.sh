#!/usr/bin/env bash
# Ferry against nginx and HAProxy as reverse proxies, and against the backend directly.
# `ferry` is the gateway as shipped (Ferry's HTTP/1 loop); `ferry-pingora` the same binary
# and config with --http1-fallback (every request through Pingora's generic proxy path).
#
#   bench/proxies.sh [ROUNDS=3] [SECONDS=8]
#   bench/proxies.sh tcp [ROUNDS=3] [SECONDS=8]   # TCP proxying: bench/tcp.sh (1 GiB transfer,
#                                                 # connections/s; HAProxy mode tcp, nginx stream)
#
# One backend for all: `ferry echo --fixed-body` (64 B, and 16 KiB under /big). Each proxy
# runs one worker on CPU 0 with upstream keepalive and no access log; the load generators
# and the backend share CPU 1. Rounds rotate the order of the targets so drift hits all
# alike; the table shows medians. Load generators: wrk (closed loop, saturation), oha
# --qps (open loop, fixed rate, for latency), h2load (h2c). Writes bench/results/proxies.md
# and .json.
set -euo pipefail
if [ "${1:-}" = tcp ]; then
  shift
  exec bash "$(dirname "$0")/tcp.sh" "$@"
fi
rounds="${1:-3}"
seconds="${2:-8}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk; need nginx nginx; need haproxy haproxy; need h2load nghttp2-client; need curl curl
command -v oha >/dev/null || cargo install --quiet --locked oha
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; pkill -f "nginx -c $work" || true; rm -rf "$work"; }
trap cleanup EXIT

small=19100 big=19101
declare -A port=([direct]=$small [ferry]=19180 [ferry-pingora]=19180 [nginx]=19181 [haproxy]=19182 [ferry-1k]=19183)
declare -A h2port=([direct]=$small [ferry]=19180 [ferry-pingora]=19180 [nginx]=19191 [haproxy]=19192 [ferry-1k]=19183)
# TLS listeners (idle TLS connections are measured apart from cleartext ones).
declare -A tlsport=([ferry]=19184 [nginx]=19194 [haproxy]=19195)
idle_clients=5000
ulimit -n "$(ulimit -Hn)" # the idle-connection test holds 5,000 client connections per proxy

taskset -c 1 "$ferry" echo --listen "127.0.0.1:$small" --fixed-body 64 >/dev/null 2>&1 & pids+=($!)
taskset -c 1 "$ferry" echo --listen "127.0.0.1:$big" --fixed-body 16384 >/dev/null 2>&1 & pids+=($!)

# --- configurations -------------------------------------------------------------------
service() { # name port
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: bench}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1, namespace: bench, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $2}]
endpoints: [{addresses: ["127.0.0.1"]}]
YAML
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"
ferry_config() { # listen-port extra-routes [tls-port]
  cat <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: $1, name: http, protocol: HTTP}, hosts: ["*"]}
YAML
  [ -n "${3:-}" ] && cat <<YAML
  - {port: {number: $3, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: bench-cert}}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-cert, namespace: bench}
type: kubernetes.io/tls
data: {tls.crt: $(base64 -w0 "$work/cert.pem"), tls.key: $(base64 -w0 "$work/key.pem")}
YAML
  cat <<YAML
$(service small $small)
$(service big $big)
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: main, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - {match: [{uri: {prefix: /big}}], route: [{destination: {host: big}}]}
  - {route: [{destination: {host: small}}]}
YAML
  for i in $(seq 1 "$2"); do
    cat <<YAML
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r$i, namespace: bench}
spec:
  hosts: [svc-$((i / 10)).example.com]
  gateways: [gw]
  http: [{match: [{uri: {prefix: /p$i}}], route: [{destination: {host: small}}]}]
YAML
  done
}
mkdir -p "$work/ferry" "$work/ferry-1k"
ferry_config "${port[ferry]}" 8 "${tlsport[ferry]}" >"$work/ferry/config.yaml" # 10 routes in all
ferry_config "${port[ferry-1k]}" 998 >"$work/ferry-1k/config.yaml" # 1,000 routes in all

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 16384; }
http {
  access_log off;
  # nginx closes a client connection after 1,000 requests by default (h2load then stops
  # short); the other proxies keep it open.
  keepalive_requests 1000000;
  upstream small { server 127.0.0.1:$small; keepalive 128; keepalive_requests 1000000; }
  upstream big { server 127.0.0.1:$big; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port[nginx]};
    listen 127.0.0.1:${h2port[nginx]} http2;
    listen 127.0.0.1:${tlsport[nginx]} ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /big { proxy_pass http://big; }
    location / { proxy_pass http://small; }
  }
}
CONF
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:${port[haproxy]}
  bind 127.0.0.1:${h2port[haproxy]} proto h2
  bind 127.0.0.1:${tlsport[haproxy]} ssl crt $work/haproxy.pem
  acl big path_beg /big
  use_backend big if big
  default_backend small
backend small
  server s 127.0.0.1:$small
backend big
  server b 127.0.0.1:$big
CONF

# --- process control ------------------------------------------------------------------
wait_port() { # port: until something accepts on it (10 s at most)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
start() { # target -> prints pid of the proxy process
  case "$1" in
    direct) echo 0 ;;
    ferry|ferry-1k|ferry-pingora)
      local dir="$work/$1" extra=()
      [ "$1" = ferry-pingora ] && dir="$work/ferry" extra=(--http1-fallback)
      taskset -c 0 "$ferry" gateway --concurrency 1 --config "$dir" --admin 127.0.0.1:19001 \
        --bind-address 127.0.0.1 --access-log off --log warn "${extra[@]}" >/dev/null 2>"$work/$1.err" &
      local pid=$!
      until curl -fs http://127.0.0.1:19001/ready >/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/$1.err" >&2; return 1; }
        sleep 0.1
      done
      echo "$pid" ;;
    nginx)
      taskset -c 0 nginx -c "$work/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & local pid=$!
      wait_port "${port[nginx]}"
      until pgrep -P "$pid" >/dev/null; do sleep 0.1; done
      pgrep -P "$pid" | head -1 ;; # the worker does the work
    haproxy)
      taskset -c 0 haproxy -f "$work/haproxy.cfg" >/dev/null 2>&1 & local pid=$!
      wait_port "${port[haproxy]}"; echo "$pid" ;;
  esac
}
stop() { # target
  case "$1" in
    direct) ;;
    ferry|ferry-1k|ferry-pingora) # the trailing space keeps "ferry" from matching "ferry-1k"
      local dir="$work/$1"; [ "$1" = ferry-pingora ] && dir="$work/ferry"
      pkill -f "gateway .*--config $dir " || true
      while pgrep -f "gateway .*--config $dir " >/dev/null; do sleep 0.1; done ;;
    nginx) kill "$(cat "$work/nginx.pid")" 2>/dev/null || true ;;
    haproxy) pkill -f "haproxy -f $work/haproxy.cfg" || true ;;
  esac
  sleep 0.3
}
cpu_ticks() { [ "$1" = 0 ] && echo "0 0" || awk '{print $14, $15}' "/proc/$1/stat"; } # user system
per_10k() { # ticks requests/s -> CPU seconds per 10k requests
  awk -v t="$1" -v r="$2" -v s="$seconds" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.3f", (r > 0) ? t / hz / (r * s) * 10000 : 0}'
}
idle_conn_kib() { # pid port [tls]: RSS growth per idle keep-alive connection after one request each
  local before after
  before="$(rss_kib "$1" VmRSS)"
  coproc IDLE { python3 "$root/bench/idle_clients.py" "$2" "$idle_clients" 120 "${3:-}"; }
  read -r _ <&"${IDLE[0]}"
  after="$(rss_kib "$1" VmRSS)"
  exec {IDLE[1]}>&-
  wait "$IDLE_PID" 2>/dev/null || true
  awk -v a="$after" -v b="$before" -v n="$idle_clients" 'BEGIN {printf "%.2f", (a - b) / n}'
}
fallback_share() { # share of ferry's requests served by Pingora's path (admin metrics)
  curl -s http://127.0.0.1:19001/metrics | awk '
    /^ferry_http1_fallback_total/ {f += $NF} /^ferry_requests_total/ {r += $NF}
    END {printf "%.4f", (r > 0) ? f / r : 0}'
}
rss_kib() { [ "$1" = 0 ] && echo 0 || awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
wrk_rps() { taskset -c 1 wrk -t1 -c"$2" -d"${seconds}s" "${@:3}" "$1" | awk '/Requests\/sec/ {print $2}'; }

# --- measurements ---------------------------------------------------------------------
targets=(direct ferry ferry-pingora nginx haproxy ferry-1k)
declare -A results
record() { results["$1|$2"]+="$3 "; }

for round in $(seq "$rounds"); do
  n=${#targets[@]}
  for k in $(seq 0 $((n - 1))); do
    t=${targets[$(((k + round) % n))]}
    pid="$(start "$t")"
    url="http://127.0.0.1:${port[$t]}/"
    record "$t" idle_rss_kib "$(rss_kib "$pid" VmRSS)"
    taskset -c 1 wrk -t1 -c64 -d2s "$url" >/dev/null # warm-up
    read -r user_before sys_before <<<"$(cpu_ticks "$pid")"
    rps="$(wrk_rps "$url" 64)"
    read -r user_after sys_after <<<"$(cpu_ticks "$pid")"
    record "$t" keepalive_rps "$rps"
    record "$t" cpu_user_s_per_10k "$(per_10k $((user_after - user_before)) "$rps")"
    record "$t" cpu_sys_s_per_10k "$(per_10k $((sys_after - sys_before)) "$rps")"
    record "$t" cpu_s_per_10k "$(per_10k $((user_after - user_before + sys_after - sys_before)) "$rps")"
    [ "$t" = ferry ] && record "$t" http1_fallback_share "$(fallback_share)"
    record "$t" new_conn_rps "$(wrk_rps "$url" 16 -H 'Connection: close')"
    big_url="${url}big"; [ "$t" = direct ] && big_url="http://127.0.0.1:$big/big"
    record "$t" big_16k_rps "$(wrk_rps "$big_url" 64)"
    record "$t" h2c_rps "$(taskset -c 1 h2load -c16 -m10 -D "$seconds" "http://127.0.0.1:${h2port[$t]}/" 2>/dev/null |
      awk '/^finished in/ {gsub(/,/, ""); print $4}')"
    record "$t" peak_rss_kib "$(rss_kib "$pid" VmHWM)"
    [ "$t" != direct ] && record "$t" idle_conn_kib "$(idle_conn_kib "$pid" "${port[$t]}")"
    [ -n "${tlsport[$t]:-}" ] && record "$t" idle_tls_conn_kib "$(idle_conn_kib "$pid" "${tlsport[$t]}" tls)"
    stop "$t"
    echo "round $round: $t done" >&2
  done
done

# Latency at a fixed rate: half of nginx's median keepalive peak, the same rate for all.
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
rate="$(echo "${results[nginx|keepalive_rps]}" | median | awk '{printf "%d", $1 / 2}')"
for round in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    pid="$(start "$t")"
    json="$(taskset -c 1 oha --no-tui --output-format json -z "${seconds}s" -q "$rate" -c 32 "http://127.0.0.1:${port[$t]}/" 2>/dev/null)"
    for p in p50 p90 p99; do
      record "$t" "latency_${p}_ms" "$(echo "$json" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['latencyPercentiles']['$p'] * 1000, 3))")"
    done
    record "$t" latency_max_ms "$(echo "$json" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['summary']['slowest'] * 1000, 3))")"
    stop "$t"
  done
done

# --- report ---------------------------------------------------------------------------
metrics=(keepalive_rps new_conn_rps big_16k_rps h2c_rps latency_p50_ms latency_p90_ms latency_p99_ms latency_max_ms cpu_s_per_10k cpu_user_s_per_10k cpu_sys_s_per_10k idle_rss_kib peak_rss_kib idle_conn_kib idle_tls_conn_kib http1_fallback_share)
{
  echo "# Proxy benchmark ($(date -u +%Y-%m-%d), $rounds rounds x ${seconds}s, medians)"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB."
  echo "Proxies pinned to CPU 0 with one worker; wrk/oha/h2load and the backend on CPU 1."
  echo "Latency: oha --qps $rate (open loop, half of nginx's keepalive peak), 32 connections."
  echo "ferry-1k: the same gateway with 1,000 routes in its snapshot (others: 10)."
  echo "ferry-pingora: the ferry gateway with --http1-fallback (Pingora's generic HTTP/1 path)."
  echo "idle_conn_kib: RSS growth per connection with $idle_clients keep-alive clients idle after one request each."
  echo "idle_tls_conn_kib: the same over TLS (ECDSA P-256 certificate; TLS 1.3 with Python's defaults)."
  echo "http1_fallback_share: requests ferry handed to Pingora's path / all requests (admin metrics)."
  echo
  printf '| metric |'; printf ' %s |' "${targets[@]}"; echo
  printf '|---|'; printf -- '---|%.0s' "${targets[@]}"; echo
  for m in "${metrics[@]}"; do
    printf '| %s |' "$m"
    for t in "${targets[@]}"; do printf ' %s |' "$(echo "${results[$t|$m]:-}" | median)"; done
    echo
  done
  echo
  d99="$(echo "${results[direct|latency_p99_ms]}" | median)"
  for t in ferry ferry-pingora nginx haproxy; do
    echo "- $t added p99 latency vs direct: $(awk -v a="$(echo "${results[$t|latency_p99_ms]}" | median)" -v b="$d99" 'BEGIN {printf "%.3f", a - b}') ms"
  done
  for t in ferry-pingora nginx haproxy; do
    echo "- ferry / $t keepalive req/s: $(awk -v a="$(echo "${results[ferry|keepalive_rps]}" | median)" -v b="$(echo "${results[$t|keepalive_rps]}" | median)" 'BEGIN {printf "%.2f", a / b}')"
  done
} | tee "$out/proxies.md"
python3 - "$out/proxies.json" <<PY
import json, sys
raw = """$(for k in "${!results[@]}"; do echo "$k|${results[$k]}"; done)"""
data = {}
for line in raw.strip().splitlines():
    target, metric, values = line.split("|", 2)
    data.setdefault(target, {})[metric] = [float(v) if v not in ("", "n/a") else None for v in values.split()]
json.dump({"rate_qps": $rate, "rounds": $rounds, "seconds": $seconds, "runs": data}, open(sys.argv[1], "w"), indent=2, sort_keys=True)
PY
