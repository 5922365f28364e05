#!/usr/bin/env bash
# Ferry, nginx and HAProxy under attack, one run, same machine: for each attack a healthy
# client (a GET on a fresh connection every 10 ms, bench/attack.py) runs beside it, and the
# table shows its success rate and p99 during the attack and the proxy's peak RSS.
#
#   bench/resilience.sh [SECONDS=20]
#
# Every proxy runs one worker on CPU 0; attackers, the healthy client and the backends share
# CPU 1. Each proxy is started fresh per attack, so its peak RSS (VmHWM) is that attack's.
# Limits: each proxy as shipped, except the connection cap, 9,000 for all three (Ferry's
# --max-connections; nginx worker_connections; HAProxy maxconn, which needs two descriptors a
# connection under this machine's 20,000 open-file limit), so the 20,000-connection flood
# meets it. Writes bench/results/resilience.md and .json.
set -euo pipefail
seconds="${1:-20}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx; need haproxy haproxy; need curl curl; need openssl openssl; need python3 python3
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
attack="$root/bench/attack.py"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; pkill -f "nginx -c $work" || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

small=19300 huge=19301
declare -A port=([ferry]=19380 [nginx]=19381 [haproxy]=19382)
declare -A h2port=([ferry]=19380 [nginx]=19391 [haproxy]=19392)
declare -A tlsport=([ferry]=19384 [nginx]=19394 [haproxy]=19395)
taskset -c 1 "$ferry" echo --listen "127.0.0.1:$small" --fixed-body 64 >/dev/null 2>&1 & pids+=($!)
taskset -c 1 python3 "$attack" hugeserver "$huge" $((10 << 30)) & pids+=($!)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"

# --- configurations -------------------------------------------------------------------
service() { # name port
  printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: bench}\nspec: {ports: [{name: http, port: 80}]}\n' "$1"
  printf -- '---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: %s, namespace: bench, labels: {kubernetes.io/service-name: %s}}\naddressType: IPv4\nports: [{name: http, port: %s}]\nendpoints: [{addresses: ["127.0.0.1"]}]\n' "$1" "$1" "$2"
}
mkdir -p "$work/ferry"
cat >"$work/ferry/config.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: ${port[ferry]}, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: ${tlsport[ferry]}, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: bench-cert}}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-cert, namespace: bench}
type: kubernetes.io/tls
data: {tls.crt: $(base64 -w0 "$work/cert.pem"), tls.key: $(base64 -w0 "$work/key.pem")}
$(service small $small)
$(service huge $huge)
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: main, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - {match: [{uri: {prefix: /huge}}], route: [{destination: {host: huge}}]}
  - {route: [{destination: {host: small}}]}
YAML
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 40000;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 9000; }
http {
  access_log off;
  upstream small { server 127.0.0.1:$small; keepalive 128; }
  server {
    listen 127.0.0.1:${port[nginx]};
    listen 127.0.0.1:${h2port[nginx]} http2;
    listen 127.0.0.1:${tlsport[nginx]} ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /huge { proxy_pass http://127.0.0.1:$huge; proxy_read_timeout 600s; }
    location / { proxy_pass http://small; }
  }
}
CONF
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  maxconn 9000
  timeout connect 5s
  timeout client 60s
  timeout server 600s
  timeout http-request 10s
  http-reuse always
frontend fe
  bind 127.0.0.1:${port[haproxy]}
  bind 127.0.0.1:${h2port[haproxy]} proto h2
  bind 127.0.0.1:${tlsport[haproxy]} ssl crt $work/haproxy.pem
  use_backend huge if { path_beg /huge }
  default_backend small
backend small
  server s 127.0.0.1:$small
backend huge
  server h 127.0.0.1:$huge
CONF

# --- process control ------------------------------------------------------------------
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
start() { # proxy -> pid whose peak RSS counts
  case "$1" in
    ferry)
      taskset -c 0 "$ferry" gateway --concurrency 1 --config "$work/ferry" --admin 127.0.0.1:19309 \
        --bind-address 127.0.0.1 --access-log off --log error --max-connections 9000 \
        >/dev/null 2>"$work/ferry.err" &
      local pid=$!
      until curl -fs http://127.0.0.1:19309/ready >/dev/null; do sleep 0.1; done
      echo "$pid" ;;
    nginx)
      taskset -c 0 nginx -c "$work/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & local pid=$!
      wait_port "${port[nginx]}"
      until pgrep -P "$pid" >/dev/null; do sleep 0.1; done
      pgrep -P "$pid" | head -1 ;;
    haproxy)
      taskset -c 0 haproxy -f "$work/haproxy.cfg" >/dev/null 2>&1 & local pid=$!
      wait_port "${port[haproxy]}"; echo "$pid" ;;
  esac
}
stop() {
  case "$1" in
    ferry) pkill -f "gateway --concurrency 1 --config $work/ferry" || true ;;
    nginx) kill "$(cat "$work/nginx.pid")" 2>/dev/null || true ;;
    haproxy) pkill -f "haproxy -f $work/haproxy.cfg" || true ;;
  esac
  sleep 1
}
peak_mib() { awk '$1 == "VmHWM:" {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
alive() { kill -0 "$1" 2>/dev/null && echo yes || echo "no (died)"; }

# attack name proxy pid -> runs it beside the healthy client, prints a JSON line
run_attack() {
  local name=$1 proxy=$2 pid=$3 p=${port[$2]}
  local healthy="$work/healthy.json" result="$work/attack.json"
  taskset -c 1 python3 "$attack" healthy "$p" "$seconds" >"$healthy" & local hp=$!
  case "$name" in
    slowloris) taskset -c 1 python3 "$attack" slowloris "$p" 5000 "$seconds" >"$result" ;;
    flood) # 20,000 connections from four source addresses, in two processes (file limits)
      taskset -c 1 python3 "$attack" flood "$p" 10000 "$seconds" 127.0.0.2 127.0.0.3 >"$result.1" &
      local first=$!
      taskset -c 1 python3 "$attack" flood "$p" 10000 "$seconds" 127.0.0.4 127.0.0.5 >"$result.2"
      wait "$first"
      python3 -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); print(json.dumps({k: a[k]+b[k] for k in a}))' \
        "$result.1" "$result.2" >"$result" ;;
    tlsstall) taskset -c 1 python3 "$attack" tlsstall "${tlsport[$proxy]}" 5000 "$seconds" >"$result" ;;
    slowread) taskset -c 1 python3 "$attack" slowread "$p" "$seconds" >"$result" ;;
    h2reset) taskset -c 1 python3 "$attack" h2reset "${h2port[$proxy]}" "$seconds" >"$result" ;;
  esac
  wait "$hp"
  python3 - "$name" "$proxy" "$(peak_mib "$pid")" "$(alive "$pid")" "$healthy" "$result" <<'PY'
import json, sys
name, proxy, peak, alive, healthy, attack = sys.argv[1:]
h, a = json.load(open(healthy)), json.load(open(attack))
print(json.dumps({"attack": name, "proxy": proxy, "healthy_ok": h["ok"], "healthy_requests": h["requests"],
                  "healthy_p99_ms": h["p99_ms"], "peak_rss_mib": int(peak or 0), "alive": alive, **a}))
PY
}

attacks=(slowloris flood tlsstall slowread h2reset)
proxies=(ferry nginx haproxy)
: >"$out/resilience.json"
for name in "${attacks[@]}"; do
  for proxy in "${proxies[@]}"; do
    pid="$(start "$proxy")"
    run_attack "$name" "$proxy" "$pid" | tee -a "$out/resilience.json"
    stop "$proxy"
  done
done

python3 - "$out/resilience.json" "$seconds" >"$out/resilience.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rates = {"slowloris": "5,000 conns, 1 header byte/s", "flood": "20,000 idle conns, 4 source addrs",
         "tlsstall": "5,000 conns stalled in ClientHello", "slowread": "10 GiB response read at 160 KiB/s",
         "h2reset": "HEADERS+RST_STREAM x1000 per conn"}
print(f"Attacks of {sys.argv[2]} s; healthy client: GET on a fresh connection every 10 ms.\n")
print("| attack | rate | proxy | healthy success | healthy p99 ms | peak RSS MiB | closed by proxy | alive |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    ok = 100.0 * r["healthy_ok"] / max(1, r["healthy_requests"])
    print(f"| {r['attack']} | {rates[r['attack']]} | {r['proxy']} | {ok:.2f}% ({r['healthy_ok']}/{r['healthy_requests']}) "
          f"| {r['healthy_p99_ms']} | {r['peak_rss_mib']} | {r.get('closed_by_proxy', 0)}/{r.get('opened', 0)} | {r['alive']} |")
PY
cat "$out/resilience.md"
