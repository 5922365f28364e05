#!/usr/bin/env bash
# Builds Ferry's image as an OCI archive without a docker daemon: the `ferry` binary, CA
# certificates, and iptables with the libraries it needs (from Debian packages, so
# `ferry sidecar-init` runs in the pod), user 1337, entrypoint `ferry`. The same layout as the
# Dockerfile's image.
#
#   images/build.sh [--binary PATH] [--tag REF] [--out FILE]
#
# Defaults: target/release/ferry (built if missing), the chart's image
# (ghcr.io/ferry-dev/ferry:<appVersion>), target/images/ferry.oci.tar. Then:
#   docker load -i target/images/ferry.oci.tar      # or: podman load -i ...
#   ctr -n k8s.io images import target/images/ferry.oci.tar
#   docker tag ghcr.io/ferry-dev/ferry:0.1.0 registry.example.com/ferry:0.1.0 && docker push ...
# Needs tar, gzip, sha256sum, dpkg-deb and apt-get (a Debian-family machine).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=images/oci.sh
source "$root/images/oci.sh"
app_version="$(awk '$1 == "appVersion:" {gsub(/"/, "", $2); print $2}' "$root/charts/ferry/Chart.yaml")"
binary="" tag="ghcr.io/ferry-dev/ferry:$app_version" out="$root/target/images/ferry.oci.tar"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  binary="$root/target/release/ferry"
  [ -x "$binary" ] || (cd "$root" && cargo build --release --locked --bin ferry)
fi
mkdir -p "$(dirname "$out")"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT

# The C library ferry links against, and iptables (nf_tables backend, as Debian's default)
# with its extension modules.
debian_rootfs "$rootfs" "${FERRY_DEB_CACHE:-$root/target/images/debs}" \
  libc6 libgcc-s1 iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0 \
  libnetfilter-conntrack3 libnfnetlink0
rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/lintian" "$rootfs/usr/share/locale"
# What update-alternatives does in iptables' postinst.
for tool in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf xtables-nft-multi "$rootfs/usr/sbin/$tool"
done
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/run" "$rootfs/var"
ln -sfn ../run "$rootfs/var/run"
chmod 1777 "$rootfs/tmp"
# Debug info is not shipped (a debug build is ~450 MB with it, ~60 MB without).
objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/ferry"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/bin/false\nferry:x:1337:1337:ferry:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nferry:x:1337:\n' >"$rootfs/etc/group"
oci_archive "$rootfs" "$tag" "$out" "1337:1337" /usr/local/bin/ferry
echo "$out ($tag)"
