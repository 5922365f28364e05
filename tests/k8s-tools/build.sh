#!/usr/bin/env bash
# Builds the real Kubernetes binaries the controller tests run against (kube-apiserver, etcd,
# kubectl) from the pinned go.mod beside this script, once per machine, and prints the
# directory that holds them.
#
#   tests/k8s-tools/build.sh            # -> /root/.cache/ferry/k8s-tools/<versions>
#
# The cache key is the versions plus a hash of go.mod/go.sum, so bumping a pin rebuilds.
# FERRY_K8S_TOOLS_CACHE overrides the cache root. Needs Go (>= the go.mod's go line).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$here/go.mod")"
pins="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
cache_root="${FERRY_K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/k8s-tools}"
dir="$cache_root/kubernetes-$k8s_version-etcd-$etcd_version-$pins"

if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] && [ -x "$dir/kubectl" ]; then
  echo "$dir"
  exit 0
fi
command -v go >/dev/null || { echo "go is needed to build kube-apiserver (https://go.dev/dl)" >&2; exit 1; }

mkdir -p "$cache_root"
staging="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
started=$SECONDS
# Version stamps so `kubectl version` and the API server's /version report the real release
# instead of v0.0.0-master (kubectl warns about skew against that).
minor="$(echo "$k8s_version" | cut -d. -f2)"
stamp="k8s.io/component-base/version"
ldflags="-s -w -X $stamp.gitVersion=$k8s_version -X $stamp.gitMajor=1 -X $stamp.gitMinor=$minor"
ldflags="$ldflags -X $stamp.gitTreeState=clean -X $stamp.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
(
  cd "$here"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  echo "building kube-apiserver and kubectl $k8s_version, etcd $etcd_version (first run only)" >&2
  go build -trimpath -ldflags "$ldflags" -o "$staging/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  go build -trimpath -ldflags "$ldflags" -o "$staging/kubectl" k8s.io/kubernetes/cmd/kubectl
  go build -trimpath -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3
)
echo "built in $((SECONDS - started)) s" >&2
rm -rf "$dir"
mv "$staging" "$dir"
trap - EXIT
echo "$dir"
