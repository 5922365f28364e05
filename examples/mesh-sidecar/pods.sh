# Pods on one machine, sourced by demo.sh and bench/sidecar.sh: each pod is a network
# namespace with a veth into a bridge, an address in $subnet.0/24 and a default route; its
# sidecar gets the rules of `ferry sidecar-init` and runs as uid 1337. Set before sourcing:
# tag (short and unique: interface names are at most 15 bytes), subnet (a.b.c), ferry,
# config (the manifests directory). `pods_cleanup` removes everything.
pids=()
pods=()
declare -A sidecar_pid

pods_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pod in "${pods[@]}"; do ip netns del "$tag-$pod" 2>/dev/null || true; done
  ip link del "${tag}br" 2>/dev/null || true
}

bridge_up() {
  ip link add "${tag}br" type bridge
  ip addr add "$subnet.1/24" dev "${tag}br"
  ip link set "${tag}br" up
}

pod() { # name host-number
  local ns="$tag-$1"
  ip netns add "$ns"
  pods+=("$1")
  ip link add "$tag$1o" type veth peer name "$tag$1i"
  ip link set "$tag$1o" master "${tag}br" up
  ip link set "$tag$1i" netns "$ns"
  ip -n "$ns" addr add "$subnet.$2/24" dev "$tag$1i"
  ip -n "$ns" link set "$tag$1i" up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "$subnet.1"
}

app() { # pod ferry-echo-flags...
  local pod="$1"
  shift
  ip netns exec "$tag-$pod" "$ferry" echo --listen 0.0.0.0:8080 "$@" >/dev/null 2>&1 &
  pids+=($!)
}

sidecar() { # pod namespace [sidecar flags...]: capture rules, then the sidecar as uid 1337 (log in $config)
  local pod="$1" namespace="$2"
  shift 2
  ip netns exec "$tag-$pod" "$ferry" sidecar-init >/dev/null
  ip netns exec "$tag-$pod" setpriv --reuid 1337 --regid 1337 --clear-groups -- \
    "$ferry" sidecar --config "$config" --namespace "$namespace" --access-log off "$@" >"$config/sidecar-$pod.log" 2>&1 &
  pids+=($!)
  sidecar_pid[$pod]=$!
}

identity() { # dir spiffe-id ca-dir: a key and a 24 h certificate naming spiffe-id, signed by
  # the CA in ca-dir (made on first use), as --identity-dir reads them (needs openssl)
  local dir="$1" id="$2" ca="$3"
  mkdir -p "$dir" "$ca"
  if [ ! -f "$ca/key.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/O=cluster.local/CN=bench mesh root" -keyout "$ca/key.pem" -out "$ca/root-cert.pem" 2>/dev/null
  fi
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/" \
    -keyout "$dir/key.pem" -out "$dir/csr.pem" 2>/dev/null
  printf 'subjectAltName=URI:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' "$id" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/csr.pem" -CA "$ca/root-cert.pem" -CAkey "$ca/key.pem" -CAcreateserial \
    -days 1 -extfile "$dir/ext.cnf" -out "$dir/cert-chain.pem" 2>/dev/null
  cp "$ca/root-cert.pem" "$dir/root-cert.pem"
  chmod 755 "$dir"
  chmod 644 "$dir"/*.pem
}

wait_ready() { # pod...
  for pod in "$@"; do
    for _ in $(seq 100); do
      ip netns exec "$tag-$pod" curl -sf -o /dev/null http://127.0.0.1:15000/ready && break
      sleep 0.1
    done
  done
}
