#!/usr/bin/env bash
# Added latency of a sidecar pair and sidecar memory, in network namespaces, with mesh mTLS
# (the default between injected pods) and in cleartext; and the cost of mTLS handshakes.
#
#   bench/sidecar.sh [ROUNDS=3] [SECONDS=8] [RATE=1000]
#
# Six pods on a bridge: client-plain -> server-plain (direct, no capture); client-mesh ->
# (client sidecar) -> (server sidecar) -> server-mesh in cleartext (the server Pod is not
# injected, so no mTLS); and the same pair with mTLS (the server Pod is injected, STRICT by a
# PeerAuthentication, identities from a throwaway CA via --identity-dir). Mesh clients call
# the Services' ClusterIPs; mesh pods have `ferry sidecar-init` rules and a release-build
# `ferry sidecar` (uid 1337). The app is `ferry echo --fixed-body 64`. Load: oha, open loop
# at RATE requests/s over 16 connections, rounds alternating the three paths; the table
# shows medians. Sidecar RSS: idle (config and certificate applied, no traffic), and peak
# (VmHWM) after all rounds. Targets (issue: mesh security I): added p99 with mTLS <= 0.6 ms,
# idle RSS <= 12 MiB.
#
# Handshakes: new mTLS connections per second between the sidecars (one request per
# upstream connection, oha at full speed; the server sidecar alone on core 1, one worker)
# against nginx terminating TLS 1.3 on core 1 (one worker, ECDSA P-256 like the mesh
# certificates; oha --disable-keepalive on core 0).
# Writes bench/results/sidecar.md and .json. Needs root, iproute2, iptables, setpriv,
# openssl, nginx.
set -euo pipefail
rounds="${1:-3}"
seconds="${2:-8}"
rate="${3:-1000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"
command -v oha >/dev/null || cargo install --quiet --locked oha
command -v nm >/dev/null || { apt-get update -qq && apt-get install -y -qq binutils >/dev/null; }
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null || apt-get install -y -qq nginx >/dev/null; }
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
tag="fb$$"
subnet=10.198.0
config="$(mktemp -d)"
chmod 755 "$config"
# shellcheck source=examples/mesh-sidecar/pods.sh
source "$root/examples/mesh-sidecar/pods.sh"
trap 'pods_cleanup; rm -rf "$config"' EXIT

bridge_up
pod cp 2; pod sp 3; pod cm 4; pod sm 5; pod ct 6; pod st 7

install -m 644 "$root/bench/mesh/echo.yaml" "$config/bench.yaml"
install -m 644 "$root/bench/mesh/echo-mtls.yaml" "$config/bench-mtls.yaml"
identity "$config/id-ct" spiffe://cluster.local/ns/bench/sa/client "$config/ca"
identity "$config/id-st" spiffe://cluster.local/ns/bench/sa/echo "$config/ca"

app sp --fixed-body 64
app sm --fixed-body 64
app st --fixed-body 64
sidecar cm bench
sidecar sm bench
sidecar ct bench --identity-dir "$config/id-ct"
sidecar st bench --identity-dir "$config/id-st" --label app=echo-mtls
wait_ready cm sm ct st
sleep 1
rss() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
idle_client="$(rss "${sidecar_pid[cm]}" VmRSS)"
idle_server="$(rss "${sidecar_pid[sm]}" VmRSS)"
idle_client_mtls="$(rss "${sidecar_pid[ct]}" VmRSS)"
idle_server_mtls="$(rss "${sidecar_pid[st]}" VmRSS)"

declare -A results
record() { results["$1|$2"]+="$3 "; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
run() { # target netns url [host]
  local json
  json="$(ip netns exec "$tag-$2" oha --no-tui --output-format json -z "${seconds}s" -q "$rate" -c 16 ${4:+-H "Host: $4"} "$3" 2>/dev/null)"
  for p in p50 p90 p99; do
    record "$1" "latency_${p}_ms" "$(echo "$json" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['latencyPercentiles']['$p'] * 1000, 3))")"
  done
  record "$1" success_rate "$(echo "$json" | python3 -c "import json,sys; print(json.load(sys.stdin)['summary']['successRate'])")"
}
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  run direct cp "http://$subnet.3:8080/"
  run sidecars cm "http://10.96.0.30/" echo
  run sidecars-mtls ct "http://10.96.0.31/" echo-mtls
done
peak_client="$(rss "${sidecar_pid[cm]}" VmHWM)"
peak_server="$(rss "${sidecar_pid[sm]}" VmHWM)"
peak_client_mtls="$(rss "${sidecar_pid[ct]}" VmHWM)"
peak_server_mtls="$(rss "${sidecar_pid[st]}" VmHWM)"

# Handshakes per second: every request a new mTLS connection between the sidecars.
install -m 644 "$root/bench/mesh/handshake.yaml" "$config/handshake.yaml"
sleep 1.5 # the sidecars re-read their configuration
taskset -a -p -c 1 "${sidecar_pid[st]}" >/dev/null
taskset -a -p -c 0 "${sidecar_pid[ct]}" >/dev/null
handshakes() { # netns url [host] [oha flags...]: requests/s at full speed for $seconds
  local ns="$1" url="$2" host="$3"
  shift 3
  local prefix=()
  [ "$ns" != "-" ] && prefix=(ip netns exec "$tag-$ns")
  "${prefix[@]}" taskset -c 0 oha --no-tui --output-format json -z "${seconds}s" -c 16 \
    ${host:+-H "Host: $host"} "$@" "$url" 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin)['summary']; print(round(d['requestsPerSec']), d['successRate'])"
}
nginx_dir="$config/nginx"
mkdir -p "$nginx_dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=localhost" \
  -keyout "$nginx_dir/key.pem" -out "$nginx_dir/cert.pem" 2>/dev/null
cat >"$nginx_dir/nginx.conf" <<NGINX
worker_processes 1;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:19443 ssl;
    ssl_certificate $nginx_dir/cert.pem;
    ssl_certificate_key $nginx_dir/key.pem;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { return 200 "\$request_uri"; }
  }
}
NGINX
taskset -c 1 nginx -c "$nginx_dir/nginx.conf"
trap 'kill "$(cat "$nginx_dir/nginx.pid")" 2>/dev/null; pods_cleanup; rm -rf "$config"' EXIT
sleep 0.5
for round in $(seq "$rounds"); do
  echo "handshake round $round/$rounds" >&2
  read -r rps ok <<<"$(handshakes ct "http://10.96.0.31/" echo-mtls)"
  record handshake-ferry per_s "$rps"; record handshake-ferry success_rate "$ok"
  read -r rps ok <<<"$(handshakes - "https://127.0.0.1:19443/" "" --disable-keepalive --insecure)"
  record handshake-nginx per_s "$rps"; record handshake-nginx success_rate "$ok"
done

{
  echo "# Sidecar pair vs direct ($(date -u +%Y-%m-%d), $rounds rounds x ${seconds}s, oha -q $rate -c 16)"
  echo
  echo "| path | p50 ms | p90 ms | p99 ms | success |"
  echo "|---|---|---|---|---|"
  for t in direct sidecars sidecars-mtls; do
    echo "| $t | $(echo "${results[$t|latency_p50_ms]}" | median) | $(echo "${results[$t|latency_p90_ms]}" | median) | $(echo "${results[$t|latency_p99_ms]}" | median) | $(echo "${results[$t|success_rate]}" | median) |"
  done
  echo
  for t in sidecars sidecars-mtls; do
    for p in p50 p99; do
      echo "- $t added $p: $(awk -v a="$(echo "${results[$t|latency_${p}_ms]}" | median)" -v b="$(echo "${results[direct|latency_${p}_ms]}" | median)" 'BEGIN {printf "%.3f", a - b}') ms"
    done
  done
  echo "- sidecar RSS idle: cleartext client $idle_client KiB, server $idle_server KiB; mTLS client $idle_client_mtls KiB, server $idle_server_mtls KiB"
  echo "- peak (VmHWM): cleartext client $peak_client KiB, server $peak_server KiB; mTLS client $peak_client_mtls KiB, server $peak_server_mtls KiB"
  echo "- new mTLS connections/s (server sidecar on one core): ferry $(echo "${results[handshake-ferry|per_s]}" | median) (success $(echo "${results[handshake-ferry|success_rate]}" | median)); nginx TLS 1.3 termination on one core: $(echo "${results[handshake-nginx|per_s]}" | median) (success $(echo "${results[handshake-nginx|success_rate]}" | median))"
  # Idle RSS depends on the link order; its names carry crate hashes that any dependency
  # change alters, so say how much of it still applies (rerun bench/symbol-order.sh if low).
  order_names="$(sort -u "$root/link/symbol-order.txt")"
  found="$(nm "$ferry" | awk '{print $NF}' | sort -u | comm -12 - <(echo "$order_names") | wc -l)"
  echo "- link order: $found of $(echo "$order_names" | wc -l) names in link/symbol-order.txt found in the binary"
} | tee "$out/sidecar.md"
python3 - "$out/sidecar.json" <<PY
import json, sys
results = {k: [float(v) for v in vals.split()] for k, vals in {
$(for k in "${!results[@]}"; do echo "  \"$k\": \"${results[$k]}\","; done)
}.items()}
json.dump({"rounds": $rounds, "seconds": $seconds, "rate": $rate, "results": results,
           "rss_kib": {"idle_client": $idle_client, "idle_server": $idle_server,
                       "peak_client": $peak_client, "peak_server": $peak_server,
                       "idle_client_mtls": $idle_client_mtls, "idle_server_mtls": $idle_server_mtls,
                       "peak_client_mtls": $peak_client_mtls, "peak_server_mtls": $peak_server_mtls}},
          open(sys.argv[1], "w"), indent=2)
PY
