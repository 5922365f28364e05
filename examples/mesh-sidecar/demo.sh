#!/usr/bin/env bash
# The mesh on one machine, no cluster: three network namespaces stand for three pods on a
# bridge (a client, weather v1, weather v2), each with the iptables rules of
# `ferry sidecar-init` and a `ferry sidecar` running as uid 1337 beside a `ferry echo` app.
# The client calls the weather Service's ClusterIP (10.96.0.20, routed by nothing but the
# sidecars) 100 times and prints which version answered. The namespace is STRICT
# (strict-mtls.yaml): the sidecars talk mutual TLS with identities from a throwaway CA
# (--identity-dir; a cluster's controller issues them), and a pod without a sidecar is
# refused. Needs root, iproute2, iptables, setpriv, curl and openssl. Everything is removed
# on exit.
#
#   sudo examples/mesh-sidecar/demo.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ferry="${FERRY:-$root/target/debug/ferry}"
[ -x "$ferry" ] || (cd "$root" && cargo build --quiet)
tag="fd$$"
subnet=10.199.0
config="$(mktemp -d)"
chmod 755 "$config"
# shellcheck source=examples/mesh-sidecar/pods.sh
source "$here/pods.sh"
trap 'pods_cleanup; rm -rf "$config"' EXIT

bridge_up
pod client 2; pod v1 3; pod v2 4; pod plain 5

# What the cluster would hold: the Service with its ClusterIP, the Pods and their endpoints,
# plus the routing in mesh.yaml.
cat > "$config/weather.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: weather, namespace: weather}
spec: {clusterIP: 10.96.0.20, selector: {app: weather}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: weather-v1, namespace: weather, labels: {app: weather, version: v1}, annotations: {sidecar.ferry.dev/status: injected}}
spec: {serviceAccountName: weather, containers: [{name: app, image: ferry}]}
---
apiVersion: v1
kind: Pod
metadata: {name: weather-v2, namespace: weather, labels: {app: weather, version: v2}, annotations: {sidecar.ferry.dev/status: injected}}
spec: {serviceAccountName: weather, containers: [{name: app, image: ferry}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: weather-1, namespace: weather, labels: {kubernetes.io/service-name: weather}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: ["$subnet.3"], conditions: {ready: true}, targetRef: {kind: Pod, name: weather-v1, namespace: weather}}
  - {addresses: ["$subnet.4"], conditions: {ready: true}, targetRef: {kind: Pod, name: weather-v2, namespace: weather}}
YAML
cp "$here/mesh.yaml" "$here/strict-mtls.yaml" "$config/"
chmod 644 "$config"/*.yaml
# Each pod's workload identity: spiffe://cluster.local/ns/weather/sa/<its ServiceAccount>.
identity "$config/id-client" spiffe://cluster.local/ns/weather/sa/client "$config/ca"
identity "$config/id-v1" spiffe://cluster.local/ns/weather/sa/weather "$config/ca"
identity "$config/id-v2" spiffe://cluster.local/ns/weather/sa/weather "$config/ca"

app v1 --name weather-v1 --namespace weather
app v2 --name weather-v2 --namespace weather
for p in client v1 v2; do sidecar "$p" weather --identity-dir "$config/id-$p"; done
wait_ready client v1 v2

echo "100 requests from the client pod to http://weather (ClusterIP 10.96.0.20):"
urls=$(printf 'http://10.96.0.20/forecast %.0s' $(seq 100))
# shellcheck disable=SC2086 # one URL per word on purpose
ip netns exec "$tag-client" curl -s -w '\n' -H 'Host: weather' $urls | grep -o '"name":"[^"]*"' | sort | uniq -c
echo "with x-canary: always:"
ip netns exec "$tag-client" curl -s -H 'Host: weather' -H 'x-canary: always' http://10.96.0.20/ | grep -o '"name":"[^"]*"'
echo "the app saw its own sidecar, on the pod's address (never loopback), as the peer:"
ip netns exec "$tag-client" curl -s -H 'Host: weather' http://10.96.0.20/ | grep -o "\"peer\":\"$subnet.[34]:[0-9]*\""
echo "a pod without a sidecar calling weather-v1 directly (STRICT: refused):"
if ip netns exec "$tag-plain" curl -s -m 5 "http://$subnet.3:8080/" >/dev/null; then
  echo "served (not expected)"
else
  echo "refused"
fi
echo "v1's sidecar reports the caller by its SPIFFE ID, over mutual TLS:"
ip netns exec "$tag-v1" curl -s "http://$subnet.3:15020/stats/prometheus" |
  grep '^istio_requests_total{' | grep 'reporter="destination"' | grep -o 'connection_security_policy="[a-z_]*"\|source_principal="[^"]*"' | sort -u
