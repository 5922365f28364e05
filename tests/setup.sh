#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian-family machine (as root), then builds the
# pinned Kubernetes tools once (cached). The README's test command runs it before `cargo test`;
# .ci/run too. Safe to rerun: it installs only what is missing.
#
# System packages: a C toolchain (ring, zstd-sys), cmake (libz-ng-sys), pkg-config; iproute2
# (test backends on a non-loopback address, network namespaces as pods); iptables (the
# sidecar's capture rules), util-linux (setpriv, nsenter), curl (the client in a pod), openssl
# (throwaway certificates); for the single-node cluster (tests/cluster.rs): containerd, runc,
# Debian's CNI plugins and conntrack; binutils (objcopy strips the binary for the image);
# chromium (the dashboard's browser test, driven by playwright-core); prometheus (the shipped
# Grafana dashboards' queries, tests/grafana.rs). The dashboard's UI is
# built with Node.js and npm (Debian's when the machine has none) before cargo embeds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config iproute2 iptables util-linux curl ca-certificates openssl
  containerd runc containernetworking-plugins conntrack binutils chromium fonts-dejavu-core
  prometheus)
# Node.js and npm: the machine's own (e.g. NodeSource's, which bundles npm), else Debian's.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
# dpkg -s succeeds for a removed package whose config files remain: ask for its state.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Kubernetes tools are built with Go (once per machine; cached under
# ~/.cache/ferry/k8s-tools). Without a Go >= 1.21 on the machine (Debian 12 packages 1.19), the
# official toolchain is unpacked into /usr/local/go from the Go module proxy (the same source
# `GOTOOLCHAIN=auto` uses; go.dev itself may be unreachable). helm's go.mod asks for Go 1.26: an
# older Go >= 1.21 fetches it itself.
export PATH="$PATH:/usr/local/go/bin"
go_minor="$(go env GOVERSION 2>/dev/null | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
if [ -z "$go_minor" ] || [ "$go_minor" -lt 21 ]; then
  toolchain="v0.0.1-go1.26.8.linux-amd64"
  echo "installing: Go toolchain $toolchain from proxy.golang.org"
  for tool in curl unzip; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" ca-certificates; }
  done
  tmp="$(mktemp -d)"
  curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/$toolchain.zip"
  unzip -q "$tmp/go.zip" -d "$tmp"
  rm -rf /usr/local/go
  mv "$tmp/golang.org/toolchain@$toolchain" /usr/local/go
  chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
  rm -rf "$tmp"
fi
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
# kube-apiserver, etcd, kubectl, helm, and a node's binaries (kubelet, kube-proxy,
# kube-scheduler, kube-controller-manager, CoreDNS, fortio).
bash tests/k8s-tools/build.sh --node >/dev/null

# The dashboard's UI (dashboard/dist/ui), embedded by the next cargo build.
bash dashboard/build.sh >/dev/null
