# Sourced by images/build.sh and tests/cluster/images.sh: writes an OCI image archive from a
# directory tree, with no docker daemon (tar, gzip, sha256sum). The archive is an OCI image
# layout (index.json, oci-layout, blobs/sha256/...) that also carries docker's manifest.json,
# so `ctr images import`, `docker load` and `podman load` all read it.

# oci_archive ROOTFS NAME:TAG OUT.tar USER ENTRYPOINT...: one layer with ROOTFS's files owned
# by root (mtimes zeroed, so the same files give the same digests), the given user and
# entrypoint, PATH set.
oci_archive() {
  local rootfs="$1" ref="$2" out="$3" user="$4"
  shift 4
  local work
  work="$(mktemp -d)"
  mkdir -p "$work/blobs/sha256"
  tar -C "$rootfs" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$work/layer.tar" .
  local diff_id layer layer_size
  diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  gzip -n -1 "$work/layer.tar"
  layer="$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)"
  layer_size="$(stat -c %s "$work/layer.tar.gz")"
  mv "$work/layer.tar.gz" "$work/blobs/sha256/$layer"

  local entrypoint="" arg
  for arg in "$@"; do entrypoint="$entrypoint${entrypoint:+,}\"$arg\""; done
  printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":[%s],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"images/oci.sh"}]}' \
    "$user" "$entrypoint" "$diff_id" >"$work/config.json"
  local config config_size
  config="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
  config_size="$(stat -c %s "$work/config.json")"
  mv "$work/config.json" "$work/blobs/sha256/$config"

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest"
  local manifest manifest_size
  manifest="$(sha256sum "$work/manifest" | cut -d' ' -f1)"
  manifest_size="$(stat -c %s "$work/manifest")"
  mv "$work/manifest" "$work/blobs/sha256/$manifest"

  # containerd names the image from io.containerd.image.name; docker and podman from the
  # full reference in org.opencontainers.image.ref.name or manifest.json's RepoTags.
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$ref" "$ref" >"$work/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":["blobs/sha256/%s"]}]' \
    "$config" "$ref" "$layer" >"$work/manifest.json"
  tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -cf "$out" oci-layout index.json manifest.json blobs
  rm -rf "$work"
}

# debian_rootfs DIR CACHE PACKAGE...: unpacks Debian packages (the machine's own release,
# fetched with apt-get download into CACHE) into DIR. Maintainer scripts do not run: callers
# make the links they would have made.
debian_rootfs() {
  local dir="$1" cache="$2"
  shift 2
  mkdir -p "$dir" "$cache"
  local pkg deb
  for pkg in "$@"; do
    deb="$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -1 || true)"
    if [ -z "$deb" ]; then
      (cd "$cache" && apt-get download -qq "$pkg" 2>/dev/null) ||
        (apt-get update -qq && cd "$cache" && apt-get download -qq "$pkg")
      deb="$(ls "$cache/${pkg}"_*.deb | head -1)"
    fi
    dpkg-deb -x "$deb" "$dir"
  done
}
