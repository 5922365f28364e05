#!/usr/bin/env bash
# Serves this example's Ingresses as they are (default), or what `ferry migrate` makes of
# them (--migrated), with the same backends, on port 18090 (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ferry="${FERRY:-$root/target/debug/ferry}"
[ -x "$ferry" ] || (cd "$root" && cargo build --quiet)
if [ "${1:-}" != "--migrated" ]; then
  exec "$here/../run-example.sh" "$here" --ingress-port 18090 --ingress-class nginx "$@"
fi
shift
migrated="$(mktemp -d)"
trap 'rm -rf "$migrated"' EXIT
cp "$here/backends.txt" "$here/backends.yaml" "$migrated/"
"$ferry" migrate -f "$here/ingresses.yaml" -f "$here/admin-ingress.yaml" --http-port 18090 \
  > "$migrated/migrated.yaml"
echo "migrated objects: $migrated/migrated.yaml" >&2
# The Ingress the migration leaves as it is (basic auth) is served beside them, on the same port.
cp "$here/admin-ingress.yaml" "$migrated/"
"$here/../run-example.sh" "$migrated" --ingress-port 18090 --ingress-class nginx "$@"
