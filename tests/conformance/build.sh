#!/usr/bin/env bash
# The pinned Gateway API release, from the Go module proxy (go.mod beside this script):
#
#   tests/conformance/build.sh --crds CHANNEL   # prints the directory of the release's CRDs
#                                               # (CHANNEL: standard or experimental)
#   tests/conformance/build.sh --suite          # prints the conformance module's directory
#                                               # (its manifests name the images to import)
#   tests/conformance/build.sh                  # builds the conformance suite's test binary,
#                                               # its echo server and the CoreDNS release its
#                                               # manifests run (coredns/); prints their directory
#
# Nothing of the release is committed here: the CRDs and the suite come from the module's
# download, the binaries are cached in ~/.cache/ferry/conformance/<version>-<hash of pins>
# (FERRY_CONFORMANCE_CACHE overrides the root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PATH="$PATH:/usr/local/go/bin" GOFLAGS=-mod=mod
command -v go >/dev/null || { echo "go is needed (tests/setup.sh installs it)" >&2; exit 1; }

version="$(awk '$1 == "sigs.k8s.io/gateway-api" {print $2}' "$here/go.mod")"
module_dir() { (cd "$here" && go mod download -json "$1@$version" | sed -nE 's/^\t"Dir": "(.*)",$/\1/p'); }

if [ "${1:-}" = "--crds" ]; then
  channel="${2:-standard}"
  dir="$(module_dir sigs.k8s.io/gateway-api)/config/crd/$channel"
  [ -d "$dir" ] || { echo "no CRDs for channel $channel in $dir" >&2; exit 1; }
  echo "$dir"
  exit 0
fi

if [ "${1:-}" = "--suite" ]; then
  module_dir sigs.k8s.io/gateway-api/conformance
  exit 0
fi

pins="$(cat "$here"/go.* "$here"/*.go "$here"/coredns/go.* | sha256sum | cut -c1-12)"
out="${FERRY_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/conformance}/$version-$pins"
mkdir -p "$out"
build() { # DIR NAME PACKAGE GO_ARGS...: in DIR, go GO_ARGS -o STAGING PACKAGE, unless NAME is built
  local dir="$1" name="$2" package="$3" staging started=$SECONDS
  shift 3
  [ -x "$out/$name" ] && return
  staging="$(mktemp "$out/.$name.XXXXXX")"
  echo "building $name (first run only)" >&2
  (cd "$dir" && CGO_ENABLED=0 go "$@" -o "$staging" "$package") || { rm -f "$staging"; exit 1; }
  mv "$staging" "$out/$name"
  echo "$name built in $((SECONDS - started)) s" >&2
}
build "$here" conformance.test . test -c -trimpath
build "$here" echo-basic sigs.k8s.io/gateway-api/conformance/echo-basic build -trimpath -ldflags "-s -w"
build "$here/coredns" coredns github.com/coredns/coredns build -trimpath -ldflags "-s -w"
echo "$out"
