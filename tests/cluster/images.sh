#!/usr/bin/env bash
# Builds the test cluster's images from local files (no registry, no docker daemon) and imports
# them into its containerd (namespace k8s.io, where the kubelet looks):
#
#   tests/cluster/images.sh STATE_DIR --base           # localhost/pause:ferry (the sandbox
#                                                      # image), CoreDNS, fortio (up.sh)
#   tests/cluster/images.sh STATE_DIR --ferry [BINARY] # ghcr.io/ferry-dev/ferry:<appVersion>
#                                                      # from BINARY (default target/debug/
#                                                      # ferry, the one `cargo test` built)
#   tests/cluster/images.sh STATE_DIR --conformance    # the Gateway API conformance suite's
#                                                      # echo-basic and CoreDNS, under the
#                                                      # names its manifests use
#
# Archives are cached in target/images (the ferry image by the digest of its binary), so a
# rerun with the same binary imports without rebuilding.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=images/oci.sh
source "$root/images/oci.sh"
state="$1"
shift
cache="$root/target/images"
mkdir -p "$cache"
ctr_import() {
  ctr --address "$state/containerd/containerd.sock" -n k8s.io images import "$1" >/dev/null
}

# A single static binary as the whole image.
single_binary_image() { # ref out binary user entrypoint-args...
  local ref="$1" out="$2" binary="$3" user="$4"
  shift 4
  local rootfs
  rootfs="$(mktemp -d)"
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  cp "$binary" "$rootfs/bin/"
  printf 'root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
  oci_archive "$rootfs" "$ref" "$out" "$user" "$@"
  rm -rf "$rootfs"
}

base_images() {
  local pause="$cache/pause"
  if [ ! -x "$pause" ] || [ "$here/pause.c" -nt "$pause" ]; then
    gcc -static -Os -o "$pause" "$here/pause.c"
    strip "$pause"
  fi
  single_binary_image localhost/pause:ferry "$cache/pause.oci.tar" "$pause" 65535:65535 /bin/pause
  ctr_import "$cache/pause.oci.tar"
  local tools tool real version archive
  tools="$(bash "$root/tests/k8s-tools/build.sh" --node)"
  # fortio under its Docker Hub name (built from the same release), so manifests written for
  # a real cluster (examples/helm-install/mesh.yaml) run unchanged; CoreDNS is the node's own.
  for tool in coredns fortio; do
    real="$(readlink -f "$tools/$tool")"
    version="$(basename "$(dirname "$real")" | cut -d- -f2)"
    ref="localhost/coredns:$version"
    [ "$tool" = fortio ] && ref="docker.io/fortio/fortio:${version#v}"
    archive="$cache/$tool-$version.oci.tar"
    [ -f "$archive" ] || single_binary_image "$ref" "$archive" "$real" 0:0 "/bin/$tool"
    ctr_import "$archive"
  done
}

ferry_image() { # binary
  local binary="$1" app_version key archive
  app_version="$(awk '$1 == "appVersion:" {gsub(/"/, "", $2); print $2}' "$root/charts/ferry/Chart.yaml")"
  key="$(cat "$binary" "$root/images/build.sh" "$root/images/oci.sh" | sha256sum | cut -c1-16)"
  archive="$cache/ferry-$key.oci.tar"
  if [ ! -f "$archive" ]; then
    rm -f "$cache"/ferry-*.oci.tar
    bash "$root/images/build.sh" --binary "$binary" --tag "ghcr.io/ferry-dev/ferry:$app_version" \
      --out "$archive" >/dev/null
  fi
  ctr_import "$archive"
}

# The images the pinned conformance suite's manifests name, built from the same releases
# (tests/conformance/build.sh) and tagged with exactly those names, so the manifests run
# unchanged with no registry.
conformance_images() {
  local bin suite ref binary archive
  bin="$(bash "$root/tests/conformance/build.sh")"
  suite="$(bash "$root/tests/conformance/build.sh" --suite)"
  grep -rhoE 'image: *[^ ]+' "$suite/base" "$suite/tests" | awk '{print $2}' | sort -u |
    while read -r ref; do
      case "$ref" in
        */echo-basic:*) binary=echo-basic ;;
        */coredns:*) binary=coredns ;;
        *) echo "no local build for $ref (a test that needs it cannot run)" >&2; continue ;;
      esac
      archive="$cache/conformance-$(echo "$ref" | sha256sum | cut -c1-12)-$(basename "$bin").oci.tar"
      [ -f "$archive" ] || single_binary_image "$ref" "$archive" "$bin/$binary" 0:0 "/bin/$binary"
      ctr_import "$archive"
    done
}

case "${1:-}" in
  --conformance) conformance_images ;;
  --base) base_images ;;
  --ferry) ferry_image "${2:-$root/target/debug/ferry}" ;;
  *) echo "usage: $0 STATE_DIR --base | --ferry [BINARY] | --conformance" >&2; exit 2 ;;
esac
