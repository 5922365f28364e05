#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the end-to-end tests and by hand:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc, kubelet,
# kube-proxy (iptables mode) and CoreDNS, all in a network namespace of their own (the node),
# with pod networking from Debian's CNI plugins (bridge, host-local, loopback, portmap).
#
#   tests/cluster/up.sh [STATE_DIR]     # default /tmp/ferry-cluster; prints STATE_DIR/env
#   source /tmp/ferry-cluster/env && kubectl get nodes
#   tests/cluster/down.sh [STATE_DIR]
#
# The node is the namespace `ferry-node`, address 10.91.0.2 on a veth whose other end (the
# host's, 10.91.0.1) is how the host reaches it: the API server at https://10.91.0.2:6443,
# NodePorts at 10.91.0.2:<port>, pod IPs (10.90.0.0/24) through a host route. kube-proxy's
# and the CNI's iptables rules stay in the node's namespace. Nothing is pulled from a
# registry: tests/cluster/images.sh imports every image (the pause image first), and pods use
# imagePullPolicy IfNotPresent. Installs containerd, runc, containernetworking-plugins,
# iptables, conntrack and openssl with apt-get when missing; builds the Kubernetes binaries
# with tests/k8s-tools/build.sh (cached). One cluster per machine: the kubelet's
# device-plugin socket path is fixed. Needs root. See tests/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${1:-/tmp/ferry-cluster}"
netns=ferry-node
node_ip=10.91.0.2
host_ip=10.91.0.1
pod_cidr=10.90.0.0/24
service_cidr=10.96.0.0/16
dns_ip=10.96.0.10
node_name=ferry-node

log() { echo "cluster: $*" >&2; }

# dpkg -s succeeds for a removed package whose config files remain: ask for its state.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

install_packages() {
  local missing=() p
  for p in containerd runc containernetworking-plugins iptables conntrack openssl util-linux iproute2; do
    installed "$p" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's package starts a containerd of its own under systemd where there is one; this
  # cluster runs its own with its own paths, so a system one is neither needed nor touched.
}

# A cluster left behind by a killed run is taken down first (same netns name, same paths).
clean_previous() {
  if [ -f /run/ferry-cluster.state ]; then
    local previous
    previous="$(cat /run/ferry-cluster.state)"
    log "taking down the cluster left in $previous"
    bash "$here/down.sh" "$previous" || true
  fi
  ip netns del "$netns" 2>/dev/null || true
}

node_network() {
  ip netns add "$netns"
  ip link add fnode-host type veth peer name fnode-node
  ip link set fnode-node netns "$netns"
  ip addr add "$host_ip/24" dev fnode-host
  ip link set fnode-host up
  ip route replace "$pod_cidr" via "$node_ip"
  ns ip link set lo up
  ns ip addr add "$node_ip/24" dev fnode-node
  ns ip link set fnode-node up
  ns ip route add default via "$host_ip"
  ns sysctl -qw net.ipv4.ip_forward=1
  # Pods that reach a Service backed by a pod on the same bridge: their packets must pass
  # kube-proxy's rules (br_netfilter is built into this kernel; the knob is per namespace).
  if ns test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    ns sysctl -qw net.bridge.bridge-nf-call-iptables=1
  fi
  # A Service kube-proxy has not written rules for yet (it syncs after the Service and its
  # endpoints appear) must refuse, not swallow: the cluster IP range is routed nowhere, so
  # an un-translated SYN would leave by the default route and vanish, and a client without
  # a connect timeout (the conformance suite's TCP dialer) hangs on it instead of retrying.
  # Translated packets carry the pod's address by the time the filter table sees them
  # (nat OUTPUT/PREROUTING come first), so only un-translated ones are refused.
  for chain in OUTPUT FORWARD; do
    ns iptables -w -A "$chain" -d "$service_cidr" -p tcp -j REJECT --reject-with tcp-reset
  done
}

# Runs a command in the node's network namespace. nsenter rather than `ip netns exec`, which
# remounts /sys and hides the cgroup hierarchies the kubelet and runc need.
ns() { nsenter --net="/run/netns/$netns" "$@"; }

# start NAME BINARY ARGS...: a daemon in the node's namespace, in a session of its own, log in
# $state/logs/NAME.log, pid in $state/pids/NAME.
start() {
  local name="$1"
  shift
  setsid nsenter --net="/run/netns/$netns" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name"
}

wait_for() { # what seconds command...
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what not ready after ${seconds}s"
      return 1
    fi
    sleep 0.5
  done
}

# The cluster CA, the API server's serving and kubelet-client certificates, the
# service-account key pair, and static tokens for the admin and every component (user names
# and groups as kubeadm's certificates carry them, so the built-in RBAC bindings apply).
pki() {
  local d="$state/pki"
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=ferry-test-cluster-ca" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  sign() { # name subject extensions
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
      -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
  }
  sign apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:$node_ip,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage=serverAuth"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    "extendedKeyUsage=clientAuth"
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkey -out "$d/sa.key"
  openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub"
  local t
  : >"$d/tokens.csv"
  for t in "admin|admin|system:masters" "kubelet|system:node:$node_name|system:nodes" \
    "kube-proxy|system:kube-proxy|" "controller-manager|system:kube-controller-manager|" \
    "scheduler|system:kube-scheduler|"; do
    local id user group token
    IFS='|' read -r id user group <<<"$t"
    token="$(openssl rand -hex 16)"
    echo "$token,$user,$id,\"$group\"" >>"$d/tokens.csv"
    kubeconfig "$id" "$token"
  done
  chmod 600 "$d"/*.key "$d/tokens.csv"
}

kubeconfig() { # component token
  local ca
  ca="$(base64 -w0 <"$state/pki/ca.crt")"
  cat >"$state/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry-test
  cluster: {server: "https://$node_ip:6443", certificate-authority-data: $ca}
users:
- name: $1
  user: {token: $2}
contexts:
- name: ferry-test
  context: {cluster: ferry-test, user: $1}
current-context: ferry-test
EOF
  chmod 600 "$state/$1.kubeconfig"
}

control_plane() {
  start etcd "$tools/etcd" --data-dir "$state/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
  local p="$state/pki"
  start kube-apiserver "$tools/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "$node_ip" --secure-port 6443 \
    --cert-dir "$state/apiserver-certs" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --token-auth-file "$p/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$service_cidr" \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --v 1
  wait_for kube-apiserver 120 ns "$tools/kubectl" --kubeconfig "$state/admin.kubeconfig" get --raw /readyz
  start kube-controller-manager "$tools/kube-controller-manager" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --use-service-account-credentials \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --cluster-name ferry-test --leader-elect=false --bind-address 127.0.0.1 --v 1
  start kube-scheduler "$tools/kube-scheduler" \
    --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --v 1
}

containerd_up() {
  local c="$state/containerd"
  mkdir -p "$c" "$state/cni/net.d" "$state/cni/ipam"
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:ferry"
  disable_apparmor = true
  # This sandbox's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj otherwise.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
  cat >"$state/cni/net.d/10-ferry-test.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "ferry-test",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$state/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  start containerd containerd --config "$c/config.toml"
  wait_for containerd 30 ctr --address "$c/containerd.sock" version
}

node_agents() {
  mkdir -p "$state/kubelet" "$state/manifests" "$state/pod-logs"
  # Pods with dnsPolicy Default read this; the host's may name servers the node cannot reach.
  echo "nameserver $dns_ip" >"$state/resolv.conf"
  cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 (hybrid) and PID 1 is not systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$state/containerd/containerd.sock
podLogsDir: $state/pod-logs
staticPodPath: $state/manifests
volumePluginDir: $state/kubelet/volume-plugins
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
evictionHard: {nodefs.available: "1%", imagefs.available: "1%", memory.available: "100Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDNS: [$dns_ip]
clusterDomain: cluster.local
resolvConf: $state/resolv.conf
serializeImagePulls: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
EOF
  start kubelet "$tools/kubelet" --config "$state/kubelet.yaml" \
    --kubeconfig "$state/kubelet.kubeconfig" --root-dir "$state/kubelet" \
    --cert-dir "$state/kubelet/pki" --hostname-override "$node_name" --node-ip "$node_ip" --v 1
  cat >"$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
mode: iptables
# Rules follow a Service or endpoint change at once rather than after the 1 s default: a
# Gateway is Programmed when its Service has a ready endpoint, and clients dial it then.
iptables: {minSyncPeriod: 0s}
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
# No sysctl writes for conntrack table sizes (not ours to change on a shared kernel).
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  start kube-proxy "$tools/kube-proxy" --config "$state/kube-proxy.yaml" --v 1
}

node_ready() {
  [ "$(ns "$tools/kubectl" --kubeconfig "$state/admin.kubeconfig" get node "$node_name" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

install_packages
tools="$(bash "$root/tests/k8s-tools/build.sh" --node)"
clean_previous
rm -rf "$state"
mkdir -p "$state/logs" "$state/pids"
echo "$state" >/run/ferry-cluster.state
started=$SECONDS
node_network
pki
control_plane
containerd_up
bash "$here/images.sh" "$state" --base
node_agents
wait_for "node $node_name Ready" 120 node_ready
cat >"$state/env" <<EOF
export KUBECONFIG=$state/admin.kubeconfig
export PATH=$tools:\$PATH
export FERRY_NODE_IP=$node_ip
export FERRY_NODE_NETNS=$netns
export FERRY_CLUSTER_STATE=$state
EOF
coredns="$(basename "$(dirname "$(readlink -f "$tools/coredns")")" | cut -d- -f2)"
sed "s|localhost/coredns:v[0-9.]*|localhost/coredns:$coredns|" "$here/coredns.yaml" |
  "$tools/kubectl" --kubeconfig "$state/admin.kubeconfig" apply -f - >/dev/null
log "node $node_name Ready in $((SECONDS - started)) s; source $state/env"
echo "$state/env"
