#!/usr/bin/env bash
# Builds the real Kubernetes binaries the tests run against, once per machine, and prints the
# directory that holds them all:
#
#   tests/k8s-tools/build.sh          # kube-apiserver, etcd, kubectl, helm
#   tests/k8s-tools/build.sh --node   # and a node's: kubelet, kube-proxy, kube-scheduler,
#                                     # kube-controller-manager, coredns, fortio
#
# -> /root/.cache/ferry/k8s-tools/<versions>. The Kubernetes binaries come from the pinned
# go.mod beside this script; helm, CoreDNS and fortio from modules of their own (helm/,
# coredns/, fortio/), so their dependency versions never move the Kubernetes build's. Each
# cache key is the versions plus a hash of the go.mod/go.sum, so bumping a pin rebuilds only
# what it pins. FERRY_K8S_TOOLS_CACHE overrides the cache root. Needs Go (>= the go.mod's go
# line; an older go fetches that toolchain itself).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
node=false
[ "${1:-}" = "--node" ] && node=true
cache_root="${FERRY_K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/k8s-tools}"
mkdir -p "$cache_root"

# The version a go.mod requires of a module, in a require block or on a require line.
required() { awk -v m="$2" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$1/go.mod"; }
pins() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-12; }

k8s_version="$(required "$here" k8s.io/kubernetes)"
etcd_version="$(required "$here" go.etcd.io/etcd/server/v3)"
dir="$cache_root/kubernetes-$k8s_version-etcd-$etcd_version-$(pins "$here")"

need_go() {
  command -v go >/dev/null || { echo "go is needed to build $1 (https://go.dev/dl)" >&2; exit 1; }
}

# build MODULE_DIR OUT_DIR NAME PACKAGE [LDFLAGS]: go build of PACKAGE into OUT_DIR/NAME unless
# it is there (built in a staging file and moved, so an interrupted build leaves nothing).
build() {
  local module="$1" out="$2" name="$3" package="$4" ldflags="${5:--s -w}"
  [ -x "$out/$name" ] && return
  need_go "$name"
  mkdir -p "$out"
  local started=$SECONDS staging
  staging="$(mktemp "$out/.$name.XXXXXX")"
  echo "building $name (first run only)" >&2
  (cd "$module" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$staging" "$package") ||
    { rm -f "$staging"; exit 1; }
  mv "$staging" "$out/$name"
  echo "$name built in $((SECONDS - started)) s" >&2
}

# Version stamps so `kubectl version`, the API server's /version and the node's kubelet
# version report the real release instead of v0.0.0-master (kubectl warns about skew).
minor="$(echo "$k8s_version" | cut -d. -f2)"
stamp="k8s.io/component-base/version"
k8s_ldflags="-s -w -X $stamp.gitVersion=$k8s_version -X $stamp.gitMajor=1 -X $stamp.gitMinor=$minor"
k8s_ldflags="$k8s_ldflags -X $stamp.gitTreeState=clean -X $stamp.buildDate=1970-01-01T00:00:00Z"
k8s_ldflags="$k8s_ldflags -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"

k8s() { build "$here" "$dir" "$1" "k8s.io/kubernetes/cmd/$1" "$k8s_ldflags"; }
k8s kube-apiserver
k8s kubectl
build "$here" "$dir" etcd go.etcd.io/etcd/server/v3

# Tools in modules of their own: built into a directory keyed by their own pins, linked
# beside the Kubernetes binaries.
own_module() { # subdir module name package ldflags-with-VERSION
  local module_dir="$here/$1" version out ldflags="${5:--s -w}"
  version="$(required "$module_dir" "$2")"
  out="$cache_root/$3-$version-$(pins "$module_dir")"
  build "$module_dir" "$out" "$3" "$4" "${ldflags//VERSION/$version}"
  ln -sfn "$out/$3" "$dir/$3"
}
own_module helm helm.sh/helm/v4 helm helm.sh/helm/v4/cmd/helm \
  "-s -w -X helm.sh/helm/v4/internal/version.version=VERSION"

if $node; then
  k8s kubelet
  k8s kube-proxy
  k8s kube-scheduler
  k8s kube-controller-manager
  own_module coredns github.com/coredns/coredns coredns github.com/coredns/coredns
  own_module fortio fortio.org/fortio fortio fortio.org/fortio
fi
echo "$dir"
