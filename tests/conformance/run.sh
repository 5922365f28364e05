#!/usr/bin/env bash
# Runs the upstream Gateway API conformance suite (the release pinned in go.mod) against Ferry
# on the single-node test cluster (tests/cluster/up.sh), as Gateway API implementations
# report conformance:
#
#   tests/conformance/run.sh          # GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS with every feature Ferry
#                                     # publishes on its GatewayClass; writes the report to
#                                     # conformance/reports/<version>/ferry.yaml
#   tests/conformance/run.sh --core   # the same profiles, core features only (CI); the report
#                                     # goes to target/conformance/ferry-core.yaml
#   ... -- -run-test HTTPRouteSimpleSameNamespace    # extra flags go to the suite
#
# Environment: FERRY_BINARY (default target/debug/ferry: the image is built from it),
# FERRY_CONFORMANCE_STATE (cluster state dir, default /tmp/ferry-conformance),
# FERRY_CONFORMANCE_KEEP=1 leaves the cluster up afterwards (tests/cluster/down.sh STATE).
#
# The suite runs inside the node's network namespace: each Gateway's address is the
# ClusterIP of the Service the controller deployed for it (no load-balancer controller on the
# node), which kube-proxy routes there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${FERRY_CONFORMANCE_STATE:-/tmp/ferry-conformance}"
binary="${FERRY_BINARY:-$root/target/debug/ferry}"
mode=full
if [ "${1:-}" = "--core" ]; then mode=core; shift; fi
[ "${1:-}" = "--" ] && shift
extra=("$@")

log() { echo "conformance: $*" >&2; }
[ -x "$binary" ] || { echo "no ferry binary at $binary (cargo build first)" >&2; exit 1; }

bin="$(bash "$here/build.sh")"
crds="$(bash "$here/build.sh" --crds standard)"
version="$(awk '$1 == "sigs.k8s.io/gateway-api" {print $2}' "$here/go.mod")"
app_version="$(awk '$1 == "appVersion:" {gsub(/"/, "", $2); print $2}' "$root/charts/ferry/Chart.yaml")"

started=$SECONDS
bash "$root/tests/cluster/up.sh" "$state" >/dev/null
cleanup() { [ "${FERRY_CONFORMANCE_KEEP:-}" = 1 ] || bash "$root/tests/cluster/down.sh" "$state"; }
trap cleanup EXIT
# shellcheck disable=SC1091
source "$state/env"
bash "$root/tests/cluster/images.sh" "$state" --ferry "$binary"
bash "$root/tests/cluster/images.sh" "$state" --conformance
log "cluster up with images in $((SECONDS - started)) s"

# The upstream CRDs, from the pinned module's download; Ferry's chart for the Istio kinds and
# the controller. No shared gateway: the controller deploys one per Gateway.
kubectl apply --server-side -f "$crds" >/dev/null
helm install ferry-crds "$root/charts/ferry-crds" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
helm install ferry "$root/charts/ferry" --namespace ferry-system --create-namespace \
  --set gateway.enabled=false --set controller.replicas=1 \
  --set controller.podDisruptionBudget.enabled=false >/dev/null
kubectl -n ferry-system rollout status deployment/ferry-controller --timeout=180s >/dev/null
log "Ferry installed"

args=(
  -test.v -test.timeout=80m
  -gateway-class=ferry
  -conformance-profiles=GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS
  -organization=ferry-dev -project=ferry -url=https://github.com/ferry-dev/ferry
  -version="v$app_version" -contact=https://github.com/ferry-dev/ferry/issues
  -cleanup-base-resources=false
)
if [ "$mode" = core ]; then
  mkdir -p "$root/target/conformance"
  report="$root/target/conformance/ferry-core.yaml"
  # TLSRoute's termination modes too: without them the suite expects Terminate listeners
  # to be refused, which Ferry serves.
  args+=(-supported-features=Gateway,HTTPRoute,ReferenceGrant,GRPCRoute,TLSRoute,TLSRouteModeTerminate,TLSRouteModeMixed)
else
  mkdir -p "$root/conformance/reports/$version"
  report="$root/conformance/reports/$version/ferry.yaml"
fi
args+=(-report-output="$report")
log "running the $version suite ($mode)"
status=0
output="$state/conformance.out"
(cd "$state" && nsenter --net=/run/netns/ferry-node "$bin/conformance.test" "${args[@]}" "${extra[@]}") \
  2>&1 | tee "$output" || status=$?
log "suite finished in $((SECONDS - started)) s (exit $status); report: $report"
if [ "$status" -ne 0 ]; then
  kubectl get pods -A -o wide >&2 || true
  kubectl -n ferry-system logs deployment/ferry-controller --tail=100 >&2 || true
  # Last, where a truncated CI log still shows it: which subtests failed and the suite's own
  # words about them (its assertion lines name the step and what it saw).
  log "failed subtests:"
  grep -E -- '--- FAIL' "$output" >&2 || true
  grep -E -B2 -A12 'Error Trace|Error:' "$output" | tail -n 120 >&2 || true
fi
exit "$status"
