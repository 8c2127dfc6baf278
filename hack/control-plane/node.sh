# The node of the test control plane (KCP_NODE=1): containerd, kubelet, kube-proxy and
# kube-scheduler on this machine, so pods run, Services answer and the chart installs for real.
# Sourced by start.sh, whose helpers (launch, free_port, wait_ready, say, fail, alive) it uses.
# See docs/control-plane.md ("The node").
# shellcheck shell=bash

# One node per machine: its bridge, its Service route and its iptables rules are machine-wide.
NODE_NAME=kcp-node
NODE_DIR=${KCP_NODE_DIR:-/var/lib/kcp-node}
NODE_BRIDGE=kcp0
POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1 # the bridge's address: pods reach the apiserver and the kubelet here
SERVICE_CIDR=10.0.0.0/24
PAUSE_IMAGE=localhost/kcp-pause:3.10
NODE_LOCK=/run/lock/kcp-node.lock
NODE_CGROUP=kcp-node

node_preflight() {
  [[ $(id -u) == 0 ]] || fail "KCP_NODE=1 needs root (network namespaces, iptables, mounts)"
  local c
  for c in containerd runc iptables iptables-save ip conntrack findmnt; do
    command -v "$c" >/dev/null || fail "KCP_NODE=1 needs $c (hack/ensure-tools.sh installs it)"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback && -x /usr/lib/cni/portmap ]] \
    || fail "KCP_NODE=1 needs the CNI plugins in /usr/lib/cni (Debian: containernetworking-plugins)"
  for c in kubelet kube-proxy kube-scheduler kcp-cri-clean; do
    [[ -x $BIN/$c ]] || fail "$BIN has no executable $c"
  done
  mkdir -p "${NODE_LOCK%/*}"
  exec 9>"$NODE_LOCK"
  flock -n 9 || fail "another node runs on this machine (lock $NODE_LOCK); stop its control plane first"
  # Leftovers of a launcher that was SIGKILLed (it could not tear down) go first.
  node_teardown quiet
}

# ---------------------------------------------------------------------------------------------
# Network: a bridge for the pods (the CNI bridge plugin adopts it), and a route that keeps the
# Service range on this machine: kube-proxy rewrites Service addresses to pod or node addresses,
# and a packet it has not (yet) rewritten goes to the bridge, where nothing answers, instead of
# the default route. (A dummy link would do too, but not every kernel here has the driver.)
node_network_up() {
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  ip route add "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  sysctl -qw net.ipv4.ip_forward=1
  # Service traffic between pods on one bridge must pass iptables (kube-proxy's DNAT).
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] \
    || fail "br_netfilter is not loaded (modprobe br_netfilter): Services between pods would not work"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
}

node_pki() { # run inside $PKI with start.sh's key/issue helpers
  issue kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" extendedKeyUsage=clientAuth
  issue kubelet-serving "/CN=$NODE_NAME" "$(printf '%s\n' extendedKeyUsage=serverAuth "subjectAltName=DNS:$NODE_NAME,IP:$NODE_IP")"
  issue kube-proxy /CN=system:kube-proxy extendedKeyUsage=clientAuth
  issue kube-scheduler /CN=system:kube-scheduler extendedKeyUsage=clientAuth
  # The apiserver's identity towards the kubelet (logs, exec, port-forward): the kubelet asks
  # the apiserver whether it may (Webhook authorization); system:masters may.
  issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" extendedKeyUsage=clientAuth
}

node_apiserver_flags() {
  printf '%s\n' \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP
}

# ---------------------------------------------------------------------------------------------
start_scheduler() {
  free_port SCHED_PORT
  write_kubeconfig "$KCP_DIR/kube-scheduler.kubeconfig" kube-scheduler
  launch scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$KCP_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$KCP_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$KCP_DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false
}
probe_scheduler() { curl -fsSk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"; }

# This machine may not grant CAP_SYS_RESOURCE even to root, and the kubelet asks runc for a
# negative oom_score_adj (-998 for pod sandboxes), which needs it: runc then fails with
# "can't get final child's PID from pipe: EOF". Where it is missing, containerd runs runc through
# a wrapper that raises a negative oomScoreAdj in the bundle to 0 (the kernel's default).
node_runc() {
  local bound
  bound=$(sed -n 's/^CapBnd:\s*//p' /proc/self/status)
  if (((0x$bound >> 24) & 1)); then
    command -v runc
    return
  fi
  cat >"$NODE_DIR/runc" <<EOF
#!/bin/sh
# Written by hack/control-plane/node.sh: no CAP_SYS_RESOURCE here, so no negative oom_score_adj.
bundle=
prev=
for arg in "\$@"; do
  [ "\$prev" = --bundle ] || [ "\$prev" = -b ] && bundle=\$arg
  prev=\$arg
done
if [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ]; then
  sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "\$bundle/config.json"
fi
exec $(command -v runc) "\$@"
EOF
  chmod 0755 "$NODE_DIR/runc"
  echo "$NODE_DIR/runc"
}

start_containerd() {
  mkdir -p "$NODE_DIR"/{containerd,cni/net.d,cni/ipam}
  # No ipMasq: pods need no way off this machine, so none is made.
  cat >"$NODE_DIR/cni/net.d/10-kcp.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kcp",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # cgroupfs, not systemd: no systemd runs here. netns_mounts_under_state_dir: the pods'
  # network namespaces live under $NODE_DIR, not in the machine-wide /var/run/netns.
  cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$NODE_DIR/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(node_runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOF
  launch containerd containerd --config "$NODE_DIR/containerd.toml" --log-level warn
}
ctr_() { ctr --address "$NODE_DIR/containerd.sock" --namespace k8s.io "$@"; }
probe_containerd() { ctr_ version; }

# Images come from archives built here (hack/image/): no registry is reachable.
node_import_images() {
  local archive
  for archive in "$("$ROOT/hack/image/build-pause.sh" | tail -1)" ${KCP_NODE_IMAGES:-}; do
    [[ -f $archive ]] || fail "KCP_NODE_IMAGES: no such image archive: $archive"
    ctr_ images import --all-platforms "$archive" >&2 || fail "could not import $archive"
  done
}

start_kubelet() {
  free_port KUBELET_PORT
  free_port KUBELET_HEALTHZ_PORT
  write_kubeconfig "$KCP_DIR/kubelet.kubeconfig" kubelet
  mkdir -p "$NODE_DIR/kubelet"
  # No cluster DNS runs here: pods get a resolver that answers nothing, rather than the
  # machine's, so no pod sends a query off this machine. Use Service IPs (or their env vars).
  echo "nameserver 127.0.0.1" >"$NODE_DIR/resolv.conf"
  # cgroup v1 with the cgroupfs driver (no systemd); failCgroupV1: false, since kubelet 1.35
  # refuses cgroup v1 by default and 1.34 warns. imageGCHighThresholdPercent 100: images that
  # cannot be pulled again must not be collected. syncFrequency stays at its default (1m): how
  # late a pod sees a ConfigMap change is part of what the tests measure.
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$NODE_DIR/containerd.sock
resolvConf: $NODE_DIR/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
registerNode: true
EOF
  # The kubelet wants its cgroup root to exist in every hierarchy (cgroup v1); a new cpuset
  # starts with no CPUs and no memory nodes, so it gets its parent's.
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f $h/cgroup.procs ]] || continue
    mkdir -p "$h$NODE_CGROUP"
    if [[ -f $h/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h$NODE_CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$NODE_CGROUP/cpuset.mems"
    fi
  done
  launch kubelet "$BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$KCP_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
}
probe_kubelet() {
  curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" \
    && "$BIN/kubectl" --kubeconfig="$KUBECONFIG_PATH" wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
}

start_kube_proxy() {
  free_port PROXY_METRICS_PORT
  free_port PROXY_HEALTHZ_PORT
  write_kubeconfig "$KCP_DIR/kube-proxy.kubeconfig" kube-proxy
  # maxPerCore 0: leave the machine's conntrack table size alone. NodePorts only on the node
  # address, never on the machine's own interfaces.
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $KCP_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
iptables: {localhostNodePorts: false}
EOF
  launch kube-proxy "$BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
}
# Ready once it has written the rules of the `kubernetes` Service.
probe_kube_proxy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz" \
    && iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'
}

# The last steps of start-up: the `kubernetes` Service reaches the apiserver from a pod.
node_ready_message() {
  say "node $NODE_NAME Ready (containerd $(containerd --version | cut -d' ' -f3), pods in $POD_CIDR, Services in $SERVICE_CIDR, state in $NODE_DIR)"
}

# ---------------------------------------------------------------------------------------------
# Teardown, idempotent and safe on a half-started node: every pod through the runtime (CNI DEL:
# veth, IP lease, rules; its network namespace), containerd and its shims, kube-proxy's rules,
# every mount under $NODE_DIR, the bridge, the Service route, the cgroups, the state directory.
node_teardown() {
  local - quiet=${1:-} m
  set +e # every step is tried, whatever failed before it
  if [[ -S $NODE_DIR/containerd.sock ]] && ctr_ version >/dev/null 2>&1; then
    "$BIN/kcp-cri-clean" "$NODE_DIR/containerd.sock" 2>>"$KCP_DIR/node-teardown.log" \
      || say "kcp-cri-clean failed (see $KCP_DIR/node-teardown.log); removing what is left by hand"
  fi
  stop_components containerd
  # Shims of containers containerd no longer knows about (it was killed): their command line
  # names our state directory.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $NODE_DIR/" 2>/dev/null || true
  [[ -x $BIN/kube-proxy ]] && "$BIN/kube-proxy" --cleanup >>"$KCP_DIR/node-teardown.log" 2>&1
  node_remove_rules
  for m in $(findmnt -rn -o TARGET | grep -F "$NODE_DIR/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  ip link show master "$NODE_BRIDGE" 2>/dev/null | sed -n 's/^[0-9]*: \([^@:]*\).*/\1/p' \
    | while read -r veth; do ip link delete "$veth" 2>/dev/null || true; done
  ip link delete "$NODE_BRIDGE" 2>/dev/null || true
  # Container processes whose shim was killed live on in the pods' cgroups.
  local d
  for d in /sys/fs/cgroup/*/"$NODE_CGROUP"; do
    [[ -d $d ]] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  for d in /sys/fs/cgroup/*/"$NODE_CGROUP"; do
    [[ -d $d ]] || continue
    for _ in $(seq 50); do
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
      [[ -d $d ]] || break
      sleep 0.1
    done
  done
  rm -rf "$NODE_DIR"
  [[ $quiet == quiet ]] || node_leftovers >&2 || say "node teardown left the above behind"
}

# Chains of the kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, which
# `kube-proxy --cleanup` leaves) and of the CNI plugins (CNI-HOSTPORT-* of portmap, CNI-* of the
# bridge plugin), with every rule that jumps to them: the node's, and only the node's.
node_remove_rules() {
  local table rule chain
  for table in raw mangle nat filter; do
    iptables-save -t "$table" 2>/dev/null | grep -E '^-A .* -j (KUBE-|CNI-)' \
      | while read -r rule; do eval "iptables -t $table ${rule/#-A/-D}" 2>/dev/null || true; done
    for chain in $(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\(\(KUBE\|CNI\)-[A-Za-z0-9-]*\) .*/\1/p'); do
      iptables -t "$table" -F "$chain" 2>/dev/null
    done
    for chain in $(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\(\(KUBE\|CNI\)-[A-Za-z0-9-]*\) .*/\1/p'); do
      iptables -t "$table" -X "$chain" 2>/dev/null
    done
  done
}

# Prints what a node left on this machine; fails if anything.
node_leftovers() {
  local found=0
  pgrep -af "$NODE_DIR|$BIN/kubelet|$BIN/kube-proxy" && found=1
  findmnt -rn -o TARGET | grep -F "$NODE_DIR" && found=1
  ip -o link show | grep -F ": $NODE_BRIDGE" && found=1
  iptables-save | grep -E '^:(KUBE-|CNI-)|kcp' && found=1
  ls -d /sys/fs/cgroup/*/"$NODE_CGROUP" 2>/dev/null && found=1
  [[ -e $NODE_DIR ]] && echo "$NODE_DIR" && found=1
  return $found
}
