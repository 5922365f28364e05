#!/usr/bin/env bash
# Builds the real Kubernetes binaries the controller and chart tests run against
# (kube-apiserver, etcd, kubectl from the pinned go.mod beside this script; helm from
# helm/go.mod), once per machine, and prints the directory that holds them all.
#
#   tests/k8s-tools/build.sh            # -> /root/.cache/ferry/k8s-tools/<versions>
#
# Each cache key is the versions plus a hash of the go.mod/go.sum, so bumping a pin rebuilds
# only what it pins. FERRY_K8S_TOOLS_CACHE overrides the cache root. Needs Go (>= the
# go.mod's go line; an older go fetches that toolchain itself).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$here/go.mod")"
pins="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
cache_root="${FERRY_K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/k8s-tools}"
dir="$cache_root/kubernetes-$k8s_version-etcd-$etcd_version-$pins"

helm_version="$(awk '$1 == "helm.sh/helm/v4" {print $2}' "$here/helm/go.mod")"
helm_pins="$(cat "$here/helm/go.mod" "$here/helm/go.sum" | sha256sum | cut -c1-12)"
helm_dir="$cache_root/helm-$helm_version-$helm_pins"

build_helm() {
  [ -x "$helm_dir/helm" ] && return
  command -v go >/dev/null || { echo "go is needed to build helm (https://go.dev/dl)" >&2; exit 1; }
  mkdir -p "$cache_root"
  local staging started=$SECONDS
  staging="$(mktemp -d "$cache_root/.build-helm.XXXXXX")"
  echo "building helm $helm_version (first run only)" >&2
  (
    cd "$here/helm"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" \
      -o "$staging/helm" helm.sh/helm/v4/cmd/helm
  ) || { rm -rf "$staging"; exit 1; }
  echo "helm built in $((SECONDS - started)) s" >&2
  rm -rf "$helm_dir"
  mv "$staging" "$helm_dir"
}

if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] && [ -x "$dir/kubectl" ]; then
  build_helm
  ln -sfn "$helm_dir/helm" "$dir/helm"
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
build_helm
ln -sfn "$helm_dir/helm" "$dir/helm"
echo "$dir"
