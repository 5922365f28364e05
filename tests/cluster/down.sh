#!/usr/bin/env bash
# Takes down what tests/cluster/up.sh started, leaving the machine as it was:
#
#   tests/cluster/down.sh [STATE_DIR]     # default /tmp/ferry-cluster
#
# Order matters: the kubelet stops first (it would restart killed containers); containers
# outlive it and containerd (their shims are reparented), so every process in the pods'
# cgroups is killed, then the shims, the node's other daemons, the mounts under STATE_DIR
# (the kubelet bind-mounts its root dir; pod network namespaces are mounted in containerd's
# state dir), the `kubepods` cgroups the kubelet made at the root of every cgroup v1
# hierarchy, and the node's network namespace.
set -uo pipefail
state="${1:-/tmp/ferry-cluster}"
netns=ferry-node

# Every process in the kubepods cgroups (all hierarchies), until none is left.
kill_pods() {
  local round pids
  for round in 1 2 3 4 5 6 7 8 9 10; do
    pids="$(find /sys/fs/cgroup -path '*/kubepods*' -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
    [ -z "$pids" ] && return
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.3
  done
}

# containerd's shims for this cluster (their command line names its socket).
kill_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $state/containerd/containerd.sock" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null
  done
}

stop_daemons() { # names...
  local name pid
  for name in "$@"; do
    [ -f "$state/pids/$name" ] || continue
    pid="$(cat "$state/pids/$name")"
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
  done
}

unmount_state() {
  local target
  # Deepest first.
  awk -v s="$state" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null
  done
}

remove_kubepods_cgroups() {
  local dir
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name 'kubepods*' 2>/dev/null | while read -r dir; do
    # Children before parents.
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}

# The kubelet first, or it restarts the containers killed next (with new shims).
stop_daemons kubelet
kill_pods
kill_shims
stop_daemons kube-proxy kube-scheduler kube-controller-manager containerd kube-apiserver etcd
kill_pods
kill_shims
unmount_state
remove_kubepods_cgroups
ip netns del "$netns" 2>/dev/null
ip link del fnode-host 2>/dev/null
ip route del 10.90.0.0/24 2>/dev/null
# The kubelet's one fixed path; CNI's result cache for this network.
rm -f /var/lib/kubelet/device-plugins/kubelet.sock
rm -rf /var/lib/cni/results/ferry-test-*
if [ "$(cat /run/ferry-cluster.state 2>/dev/null)" = "$state" ]; then
  rm -f /run/ferry-cluster.state
fi
rm -rf "$state"
exit 0
