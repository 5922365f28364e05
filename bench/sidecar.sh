#!/usr/bin/env bash
# Added latency of a sidecar pair and sidecar memory, in network namespaces.
#
#   bench/sidecar.sh [ROUNDS=3] [SECONDS=8] [RATE=1000]
#
# Four pods on a bridge: client-plain -> server-plain (direct, no capture) and client-mesh ->
# (client sidecar) -> (server sidecar) -> server-mesh, where the mesh client calls the
# Service's ClusterIP and both mesh pods have `ferry sidecar-init` rules and a release-build
# `ferry sidecar` (uid 1337). The app is `ferry echo --fixed-body 64` in both servers. Load:
# oha, open loop at RATE requests/s over 16 connections, alternating direct and mesh rounds;
# the table shows medians. Sidecar RSS: idle (config applied, no traffic), and peak (VmHWM)
# after all rounds. Targets (issue: mesh): added p99 <= 0.6 ms, idle RSS <= 10 MiB.
# Writes bench/results/sidecar.md and .json. Needs root, iproute2, iptables, setpriv.
set -euo pipefail
rounds="${1:-3}"
seconds="${2:-8}"
rate="${3:-1000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results"
mkdir -p "$out"
command -v oha >/dev/null || cargo install --quiet --locked oha
command -v nm >/dev/null || { apt-get update -qq && apt-get install -y -qq binutils >/dev/null; }
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
pod cp 2; pod sp 3; pod cm 4; pod sm 5

install -m 644 "$root/bench/mesh/echo.yaml" "$config/bench.yaml"

app sp --fixed-body 64
app sm --fixed-body 64
sidecar cm bench
sidecar sm bench
wait_ready cm sm
sleep 1
rss() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
idle_client="$(rss "${sidecar_pid[cm]}" VmRSS)"
idle_server="$(rss "${sidecar_pid[sm]}" VmRSS)"

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
done
peak_client="$(rss "${sidecar_pid[cm]}" VmHWM)"
peak_server="$(rss "${sidecar_pid[sm]}" VmHWM)"

{
  echo "# Sidecar pair vs direct ($(date -u +%Y-%m-%d), $rounds rounds x ${seconds}s, oha -q $rate -c 16)"
  echo
  echo "| path | p50 ms | p90 ms | p99 ms | success |"
  echo "|---|---|---|---|---|"
  for t in direct sidecars; do
    echo "| $t | $(echo "${results[$t|latency_p50_ms]}" | median) | $(echo "${results[$t|latency_p90_ms]}" | median) | $(echo "${results[$t|latency_p99_ms]}" | median) | $(echo "${results[$t|success_rate]}" | median) |"
  done
  echo
  for p in p50 p99; do
    echo "- added $p: $(awk -v a="$(echo "${results[sidecars|latency_${p}_ms]}" | median)" -v b="$(echo "${results[direct|latency_${p}_ms]}" | median)" 'BEGIN {printf "%.3f", a - b}') ms"
  done
  echo "- sidecar RSS idle: client $idle_client KiB, server $idle_server KiB; peak (VmHWM): client $peak_client KiB, server $peak_server KiB"
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
                       "peak_client": $peak_client, "peak_server": $peak_server}},
          open(sys.argv[1], "w"), indent=2)
PY
