#!/usr/bin/env bash
# Writes link/symbol-order.txt: the functions a sidecar runs, so a release link (build.rs)
# places them side by side and an idle proxy keeps few code pages resident.
#
#   bench/symbol-order.sh
#
# Runs a sidecar pair under valgrind's callgrind in network namespaces (the pods of
# bench/sidecar.sh) twice: once started, left idle and stopped, which lists the functions of
# startup, idling and draining; then serving traffic (HTTP/1.1 and h2c through both
# sidecars, over mesh mTLS as between injected pods, identities from a throwaway CA). The file lists the first set, then the rest. Names are mangled with crate
# hashes, so rerun after a toolchain or dependency bump and after larger code changes (a
# name that no longer exists only loses its place), then `cargo build --release`.
# Needs root, iproute2, iptables, setpriv, valgrind.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
command -v oha >/dev/null || cargo install --quiet --locked oha
(cd "$root" && cargo build --release --quiet --bin ferry)
real_ferry="$root/target/release/ferry"
tag="fo$$"
subnet=10.198.0
config="$(mktemp -d)"
profiles="$(mktemp -d)"
chmod 755 "$config"
chmod 777 "$profiles"
# pods.sh runs "$ferry"; its sidecars start under callgrind (the allocator settings set here
# so the binary does not re-exec itself out of valgrind's sight).
ferry="$config/ferry-under-callgrind"
cat > "$ferry" <<SH
#!/bin/sh
[ "\$1" = sidecar ] || exec "$real_ferry" "\$@"
export MIMALLOC_ARENA_EAGER_COMMIT=0
exec valgrind --tool=callgrind --demangle=no --callgrind-out-file="$profiles/\$ROUND/%p" "$real_ferry" "\$@"
SH
chmod 755 "$ferry"
# shellcheck source=examples/mesh-sidecar/pods.sh
source "$root/examples/mesh-sidecar/pods.sh"
trap 'pods_cleanup; rm -rf "$config" "$profiles"' EXIT

bridge_up
pod cm 6; pod sm 7
install -m 644 "$root/bench/mesh/echo-mtls.yaml" "$config/bench.yaml"
identity "$config/id-cm" spiffe://cluster.local/ns/bench/sa/client "$config/ca"
identity "$config/id-sm" spiffe://cluster.local/ns/bench/sa/echo "$config/ca"
app sm --fixed-body 64

sidecars_up() { # round: both sidecars under callgrind, profiles in $profiles/round
  export ROUND="$1"
  mkdir -m 777 "$profiles/$ROUND"
  sidecar cm bench --identity-dir "$config/id-cm"
  sidecar sm bench --identity-dir "$config/id-sm" --label app=echo-mtls
  for pod in cm sm; do # valgrind starts slowly: wait up to a minute
    for _ in $(seq 600); do
      ip netns exec "$tag-$pod" curl -sf -o /dev/null http://127.0.0.1:15000/ready && break
      sleep 0.1
    done
  done
}

sidecars_down() {
  for pod in cm sm; do kill -TERM "${sidecar_pid[$pod]}"; done
  for pod in cm sm; do wait "${sidecar_pid[$pod]}" || true; done
}

sidecars_up idle
sleep 3
sidecars_down
sidecars_up traffic
ip netns exec "$tag-cm" oha --no-tui -n 2000 -c 8 -H "Host: echo-mtls" http://10.96.0.31/ >/dev/null
ip netns exec "$tag-cm" oha --no-tui -n 2000 -c 8 --http2 http://10.96.0.31/ >/dev/null
sidecars_down

python3 - "$real_ferry" "$root/link/symbol-order.txt" "$profiles" <<'PY'
import glob, re, subprocess, sys
binary, out, profiles = sys.argv[1:]
defined = re.compile(r"^c?fn=\(\d+\) (.+)$")

def functions(path):
    with open(path) as f:
        return {m.group(1) for m in map(defined.match, f) if m}

def round_functions(round):
    return set().union(*(functions(p) for p in glob.glob(f"{profiles}/{round}/*")))

idle, later = round_functions("idle"), round_functions("traffic")
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
code = {parts[2] for parts in map(str.split, nm.stdout.splitlines()) if len(parts) == 3 and parts[1] in "tTwW"}
with open(out, "w") as f:
    f.write("# Written by bench/symbol-order.sh: functions of an idle sidecar, then of one serving traffic.\n")
    for name in sorted(idle & code) + sorted((later - idle) & code):
        f.write(name + "\n")
print(f"{out}: {len(idle & code)} idle functions, {len((later - idle) & code)} more under traffic", file=sys.stderr)
PY
