#!/usr/bin/env bash
# What recording costs: requests/s through one gateway core with Istio metrics + JSON access
# log on, against the same gateway with both off, measured alternately in one run.
#
#   bench/telemetry-cost.sh [ROUNDS=5] [SECONDS=8]
#
# The gateway is pinned to CPU 0; the `ferry echo` backend and wrk share CPU 1. The access
# log goes to a file, as a container runtime's log pipe would take it. Prints a markdown
# table of the median requests/s of each mode, their ratio, and the median of the per-round
# ratios (each round measures both modes back to back, so it is less exposed to drift).
set -euo pipefail
rounds="${1:-5}"
seconds="${2:-8}"
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
(cd "$root" && cargo build --release --quiet --bin ferry)
ferry="$root/target/release/ferry"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

echo_port=19000 gw_port=19080 admin=127.0.0.1:19001
cat > "$work/config.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: $gw_port, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: bench}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-0, namespace: bench, labels: {app: echo, version: v1}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-0, namespace: bench, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: $echo_port}]
endpoints: [{addresses: ["127.0.0.1"], targetRef: {kind: Pod, name: echo-0, namespace: bench}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: echo}}]}]
YAML

taskset -c 1 "$ferry" echo --listen "127.0.0.1:$echo_port" --name echo >/dev/null 2>&1 &

# Runs wrk against a gateway started with the given flags; prints requests/s.
measure() {
  taskset -c 0 "$ferry" gateway --config "$work/config.yaml" --admin "$admin" \
    --bind-address 127.0.0.1 --log warn "$@" >"$work/access.log" 2>"$work/gateway.err" &
  local gw=$!
  until curl -fs "http://$admin/ready" >/dev/null; do sleep 0.1; done
  taskset -c 1 wrk -t1 -c32 -d2s "http://127.0.0.1:$gw_port/" >/dev/null # warm-up
  taskset -c 1 wrk -t1 -c32 -d"${seconds}s" "http://127.0.0.1:$gw_port/" |
    awk '/Requests\/sec/ {print $2}'
  kill "$gw"; wait "$gw" 2>/dev/null || true
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

on=() off=()
for round in $(seq "$rounds"); do
  # Alternate which mode goes first so drift hits both alike.
  if (( round % 2 )); then
    on+=("$(measure --istio-metrics true --access-log json)")
    off+=("$(measure --istio-metrics false --access-log off)")
  else
    off+=("$(measure --istio-metrics false --access-log off)")
    on+=("$(measure --istio-metrics true --access-log json)")
  fi
  echo "round $round: on ${on[-1]} req/s, off ${off[-1]} req/s" >&2
done
ratios=()
for i in "${!on[@]}"; do ratios+=("$(awk -v a="${on[$i]}" -v b="${off[$i]}" 'BEGIN {printf "%.3f", a / b}')"); done
on_median="$(printf '%s\n' "${on[@]}" | median)"
off_median="$(printf '%s\n' "${off[@]}" | median)"
ratio="$(awk -v a="$on_median" -v b="$off_median" 'BEGIN {printf "%.3f", a / b}')"
paired="$(printf '%s\n' "${ratios[@]}" | median)"
echo "| telemetry | median req/s ($rounds x ${seconds}s, wrk -c32, 1 gateway core) |"
echo "|---|---|"
echo "| Istio metrics + JSON access log | $on_median |"
echo "| both off | $off_median |"
echo "| on / off (ratio of medians) | $ratio |"
echo "| on / off (median of per-round ratios: ${ratios[*]}) | $paired |"
