#!/usr/bin/env bash
# Start a throw-away control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1
# for tests and local runs. See docs/control-plane.md.
#
#   start.sh                   foreground; prints `export KUBECONFIG=...`; Ctrl-C/SIGTERM stops it
#   start.sh --watch-pid PID   also stops when process PID exits; prints machine-readable
#                              KCP_DIR=, KCP_BIN_DIR= and, last, KUBECONFIG= lines once ready
#   KCP_DIR=DIR start.sh stop  stops the control plane whose state is in DIR
#
# The control plane also stops when any of its three processes dies (the tail of its log is
# printed). Environment:
#   KCP_DIR            state directory; default: a new mktemp directory, removed on a clean stop
#   KCP_CLEANUP=1      also remove a caller-chosen KCP_DIR on a clean stop (the Rust tests set it)
#   KCP_CRDS           CRD manifest file or directory, applied before the controller-manager starts
#   KCP_CONTROLLERS    kube-controller-manager --controllers (default "*": every default controller)
#   KCP_START_TIMEOUT  seconds until everything is ready (default 180; 300 with a node)
#   KCP_NODE=1         also a node: containerd, kubelet, kube-proxy and kube-scheduler (root only;
#                      one per machine; see node.sh). The apiserver then listens on the node's
#                      bridge address, which the kubeconfig names, so pods reach it too.
#   KCP_NODE_IMAGES    OCI archives to import into the node's containerd (e.g. hack/image/build.sh's)
#   KCP_AUTHENTICATION_CONFIG  an AuthenticationConfiguration file for kube-apiserver's
#                      --authentication-config (JWT issuers it trusts; it reloads the file when
#                      it changes)
#   KUBEBUILDER_ASSETS directory with etcd, kube-apiserver, kube-controller-manager, kubectl
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '5,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
say() { printf '[kcp] %s\n' "$*" >&2 2>/dev/null || true; }
fail() { say "error: $*"; exit 1; }

# A process counts as alive while it exists and is not a zombie: a killed child that its parent
# has not reaped yet still answers `kill -0`.
proc_state() { # pid -> "<state> <starttime>", or nothing when gone
  local stat rest
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 0
  rest=${stat##*) }
  read -ra f <<<"$rest"
  printf '%s %s\n' "${f[0]}" "${f[19]}"
}
alive() { local s; s=$(proc_state "$1"); [[ -n $s && $s != Z* ]]; }
# Pid files can outlive their process; only act on a pid whose command line still names this
# control plane, so a recycled pid is never signalled.
ours() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }

ROOT=$(cd "$CP_DIR/../.." && pwd)
NODE=${KCP_NODE:-0}
[[ $NODE == 0 || $NODE == 1 ]] || fail "KCP_NODE must be 0 or 1"
# shellcheck source-path=SCRIPTDIR source=node.sh
source "$CP_DIR/node.sh"
COMPONENTS=(etcd apiserver controller-manager) # start order
((NODE)) && COMPONENTS+=(scheduler containerd kubelet kube-proxy)

# ---------------------------------------------------------------------------------------------
# stop: signal the launcher, which tears down in order; fall back to the components' pid files
# if the launcher itself is gone (e.g. it was SIGKILLed).
if [[ ${1:-} == stop ]]; then
  [[ $# -eq 1 ]] || usage
  [[ -n ${KCP_DIR:-} && -d ${KCP_DIR} ]] || fail "stop needs KCP_DIR set to the state directory of a running control plane"
  KCP_DIR=$(cd "$KCP_DIR" && pwd)
  if [[ -f $KCP_DIR/launcher.pid ]]; then
    lp=$(<"$KCP_DIR/launcher.pid")
    if alive "$lp" && ours "$lp" start.sh; then
      kill -TERM "$lp" 2>/dev/null || true
      for _ in $(seq 300); do alive "$lp" || break; sleep 0.1; done
      alive "$lp" && say "launcher $lp did not stop within 30s"
    fi
  fi
  [[ -f $KCP_DIR/components ]] && read -ra COMPONENTS <"$KCP_DIR/components"
  for name in "${COMPONENTS[@]}"; do
    [[ -f $KCP_DIR/$name.pid ]] || continue
    p=$(<"$KCP_DIR/$name.pid")
    if alive "$p" && ours "$p" "$KCP_DIR"; then
      say "stopping leftover $name ($p)"
      kill -TERM "$p" 2>/dev/null || true
      for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
      alive "$p" && kill -KILL "$p" 2>/dev/null
    fi
    rm -f "$KCP_DIR/$name.pid"
  done
  if [[ " ${COMPONENTS[*]} " == *" kubelet "* ]]; then
    BIN=$(control_plane_bin_dir)
    declare -A pids=()
    stop_components() { :; } # their pid files were handled above
    node_teardown
  fi
  say "stopped"
  exit 0
fi

watch_pid=
case ${1:-} in
  "") ;;
  --watch-pid)
    [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
    watch_pid=$2
    watch_start=$(proc_state "$watch_pid")
    [[ -n $watch_start && $watch_start != Z* ]] || fail "--watch-pid $watch_pid: no such process"
    # Its start time tells it apart from a later process that reuses the pid.
    watch_start=${watch_start#* }
    ;;
  *) usage ;;
esac
watched_alive() {
  local s
  s=$(proc_state "$watch_pid")
  [[ -n $s && $s != Z* && ${s#* } == "$watch_start" ]]
}

t0=$(date +%s%N)
elapsed() { local t; t=$(date +%s%N); printf '%d.%01d' $(((t - t0) / 1000000000)) $(((t - t0) / 100000000 % 10)); }

BIN=$("$CP_DIR/build.sh" | tail -1)
for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [[ -x $BIN/$b ]] || fail "$BIN has no executable $b"
done

owned=0
if [[ -z ${KCP_DIR:-} ]]; then
  KCP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kcp.XXXXXX")
  owned=1
fi
mkdir -p "$KCP_DIR"
KCP_DIR=$(cd "$KCP_DIR" && pwd) # absolute: it ends up in flags and in the kubeconfig
if [[ -f $KCP_DIR/launcher.pid ]]; then
  lp=$(<"$KCP_DIR/launcher.pid")
  if [[ $lp != "$$" ]] && alive "$lp" && ours "$lp" start.sh; then
    fail "a control plane (launcher pid $lp) already runs in $KCP_DIR; stop it with: KCP_DIR=$KCP_DIR $0 stop"
  fi
fi
rm -rf "$KCP_DIR"/{pki,etcd-data,apiserver,controller-manager} "$KCP_DIR"/*.pid "$KCP_DIR"/kubeconfig
echo $$ >"$KCP_DIR/launcher.pid"
echo "${COMPONENTS[*]}" >"$KCP_DIR/components"
PKI=$KCP_DIR/pki
KUBECONFIG_PATH=$KCP_DIR/kubeconfig
API_HOST=127.0.0.1
((NODE)) && API_HOST=$NODE_IP
START_TIMEOUT=${KCP_START_TIMEOUT:-$((NODE ? 300 : 180))}
deadline=$((SECONDS + START_TIMEOUT))

# ---------------------------------------------------------------------------------------------
# Teardown. Every way out (signal, a dead component, the watched pid, a failed command under
# set -e) goes through the EXIT trap, so no process is left behind.
declare -A pids=()
sleeper=
stop_components() {
  local name p live=()
  for name in "$@"; do
    p=${pids[$name]:-}
    [[ -n $p ]] || continue
    alive "$p" && kill -TERM "$p" 2>/dev/null && live+=("$p")
  done
  for _ in $(seq 150); do # kube-apiserver drains requests on SIGTERM; give it 15s
    local any=0
    for p in "${live[@]}"; do alive "$p" && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for name in "$@"; do
    p=${pids[$name]:-}
    [[ -n $p ]] || continue
    alive "$p" && { say "$name ($p) ignored SIGTERM; killing it"; kill -KILL "$p" 2>/dev/null; }
    wait "$p" 2>/dev/null # reap, so no zombie outlives the launcher
    unset "pids[$name]"
    rm -f "$KCP_DIR/$name.pid"
  done
}
cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM HUP
  [[ -n $sleeper ]] && kill "$sleeper" 2>/dev/null
  if ((NODE)); then
    stop_components kube-proxy kubelet
    ((node_started)) && node_teardown
    stop_components scheduler
  fi
  stop_components controller-manager apiserver
  stop_components etcd
  rm -f "$KCP_DIR/launcher.pid"
  case $rc in
    0 | 129 | 130 | 143)
      rm -rf "$KCP_DIR/etcd-data"
      if ((owned)) || [[ ${KCP_CLEANUP:-} == 1 ]]; then rm -rf "$KCP_DIR"; fi
      say "stopped"
      ;;
    *) say "stopped after a failure; state and logs kept in $KCP_DIR" ;;
  esac
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
# A parent that stops reading (a killed test) must not kill the launcher before it cleans up;
# the components get the default SIGPIPE back (see launch).
trap '' PIPE

# Each component runs in a session of its own, so a Ctrl-C on the terminal reaches only the
# launcher, which stops them in order (setsid does not fork here: a background child of a
# script is no process-group leader, so the pid stays the one recorded). And each dies with the
# launcher even if that is SIGKILLed and cannot run its trap (parent-death signal).
wrap=(setsid)
setpriv --help 2>/dev/null | grep -q -- --pdeathsig && wrap+=(setpriv --pdeathsig KILL --)

launch() { # name command...
  local name=$1
  shift
  (
    trap - PIPE
    exec 9>&- # the node lock (node.sh) stays with the launcher
    exec "${wrap[@]}" "$@"
  ) >"$KCP_DIR/$name.log" 2>&1 &
  pids[$name]=$!
  echo "$!" >"$KCP_DIR/$name.pid"
}

# Ports are picked below the ephemeral range, so outgoing connections do not take them; a race
# with another launcher is still possible and is retried (see start_with_retries).
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((ephemeral_low > 11000)) || ephemeral_low=32768
used_ports=" "
free_port() { # varname
  local p
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % (ephemeral_low - 10000)))
    [[ $used_ports == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  fail "no free port found"
}

check_watched() {
  [[ -z $watch_pid ]] || watched_alive || { say "watched process $watch_pid exited; stopping"; exit 0; }
}

# wait_ready name probe...: poll the probe until it succeeds, the process dies (return 1), or the
# start deadline passes.
wait_ready() {
  local name=$1
  shift
  until "$@" >/dev/null 2>&1; do
    alive "${pids[$name]}" || return 1
    ((SECONDS < deadline)) || {
      tail -n 30 "$KCP_DIR/$name.log" >&2 2>/dev/null
      fail "$name not ready within ${START_TIMEOUT}s (KCP_START_TIMEOUT); log: $KCP_DIR/$name.log"
    }
    check_watched
    sleep 0.2
  done
}

# start_with_retries name start-function probe-function: a component that lost a port race
# exits with "address already in use"; start it again on new ports.
start_with_retries() {
  local name=$1 start=$2 probe=$3 attempt # start functions see $attempt (dynamic scope)
  for attempt in 1 2 3; do
    "$start"
    wait_ready "$name" "$probe" && return 0
    wait "${pids[$name]}" 2>/dev/null || true
    unset "pids[$name]"
    if grep -q 'address already in use' "$KCP_DIR/$name.log" && ((attempt < 3)); then
      say "$name lost a port race; retrying on other ports"
      continue
    fi
    tail -n 30 "$KCP_DIR/$name.log" >&2 2>/dev/null
    fail "$name exited during start-up; log: $KCP_DIR/$name.log"
  done
}

# ---------------------------------------------------------------------------------------------
# PKI: one CA signs everything and is the client CA. ECDSA P-256: fast to generate, and kube-rs
# (rustls) and kubectl accept it; OpenSSL 3 writes PKCS#8 keys.
mkdir -p "$PKI"
(
  cd "$PKI"
  exec 2>>openssl.log
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
  key ca
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj /CN=kcp-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
    -out ca.crt
  issue() { # name subject extensions
    key "$1"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile "$1.ext" -out "$1.crt"
    rm -f "$1.csr" "$1.ext"
  }
  issue apiserver /CN=kube-apiserver "$(printf '%s\n' extendedKeyUsage=serverAuth \
    subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1$( ((NODE)) && echo ",IP:$NODE_IP"))"
  # Client certs: CN is the user, O the group. system:masters bypasses RBAC; the
  # controller-manager gets exactly the bootstrap role a real cluster gives it.
  issue admin "/O=system:masters/CN=kcp-admin" extendedKeyUsage=clientAuth
  issue controller-manager /CN=system:kube-controller-manager extendedKeyUsage=clientAuth
  key sa
  openssl pkey -in sa.key -pubout -out sa.pub
  if ((NODE)); then node_pki; fi
) || fail "openssl failed; see $PKI/openssl.log"

free_port API_PORT
write_kubeconfig() { # path user
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kcp
  cluster:
    server: https://${API_HOST}:${API_PORT}
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: kcp
  context: {cluster: kcp, user: $2, namespace: default}
current-context: kcp
EOF
}

# ---------------------------------------------------------------------------------------------
start_etcd() {
  free_port ETCD_PORT
  free_port ETCD_PEER_PORT
  rm -rf "$KCP_DIR/etcd-data"
  # --unsafe-no-fsync: the data is thrown away anyway, and fsync dominates etcd's latency.
  launch etcd "$BIN/etcd" --name=kcp --data-dir="$KCP_DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="kcp=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
}
probe_etcd() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"; }

start_apiserver() {
  ((attempt == 1)) || free_port API_PORT # the first port went to a race; the kubeconfigs follow
  write_kubeconfig "$KUBECONFIG_PATH" admin
  write_kubeconfig "$KCP_DIR/controller-manager.kubeconfig" controller-manager
  # --advertise-address: without it the apiserver looks for a default-route interface and dies
  #   on hosts without one. --endpoint-reconciler-type=none: the `kubernetes` Service cannot
  #   point at a loopback address, so do not maintain its Endpoints. With a node, the apiserver
  #   listens on the node's bridge address instead, and the Service points there (node.sh).
  # Admission plugins stay at their defaults (ServiceAccount included), because the
  #   controller-manager creates each namespace's default ServiceAccount as in a real cluster.
  local where=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
    --authorization-mode=RBAC)
  ((NODE)) && mapfile -t where < <(node_apiserver_flags)
  local authentication=()
  [[ -n ${KCP_AUTHENTICATION_CONFIG:-} ]] &&
    authentication=(--authentication-config="$(realpath "$KCP_AUTHENTICATION_CONFIG")")
  launch apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    "${where[@]}" --secure-port="$API_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --cert-dir="$KCP_DIR/apiserver" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer="https://$API_HOST:$API_PORT" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true \
    "${authentication[@]}" \
    --profiling=false
}
# /readyz, not /healthz: it also waits for the RBAC bootstrap roles and the other post-start hooks.
probe_apiserver() {
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$API_HOST:$API_PORT/readyz"
}

start_controller_manager() {
  free_port KCM_PORT
  # --use-service-account-credentials: each controller acts as its own ServiceAccount with the
  #   bootstrap RBAC role a real cluster gives it (the garbage collector may delete anything,
  #   the namespace controller empties namespaces), rather than as one all-powerful user.
  # --service-account-private-key-file / --root-ca-file: token Secrets and the kube-root-ca.crt
  #   ConfigMap in every namespace, as in a real cluster.
  # --flex-volume-plugin-dir: the default is under /usr/libexec, which it would create.
  launch controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$KCP_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$KCP_DIR/controller-manager" \
    --leader-elect=false \
    --controllers="${KCP_CONTROLLERS:-*}" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --flex-volume-plugin-dir="$KCP_DIR/controller-manager/flexvolume" \
    --profiling=false
}
# /healthz is always allowed without authentication; it turns healthy once the controllers run.
probe_controller_manager() { curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"; }

node_started=0
if ((NODE)); then
  node_preflight
  node_started=1
  node_network_up
fi
start_with_retries etcd start_etcd probe_etcd
t_api=$(date +%s%N)
start_with_retries apiserver start_apiserver probe_apiserver
api_ready_ms=$((($(date +%s%N) - t_api) / 1000000))

# CRDs before the controller-manager: its garbage collector discovers resource types at start
# and otherwise only every 30 s, so owners of a kind created later are not collected at once.
if [[ -n ${KCP_CRDS:-} ]]; then
  kubectl=("$BIN/kubectl" --kubeconfig="$KUBECONFIG_PATH")
  "${kubectl[@]}" apply --server-side --field-manager=kcp-start -f "$KCP_CRDS" >&2 \
    || fail "could not apply KCP_CRDS=$KCP_CRDS"
  "${kubectl[@]}" wait --for=condition=Established crd --all --timeout="$((deadline > SECONDS ? deadline - SECONDS : 1))s" >&2 \
    || fail "CRDs from KCP_CRDS=$KCP_CRDS did not become Established"
fi

start_with_retries controller-manager start_controller_manager probe_controller_manager
if ((NODE)); then
  start_with_retries scheduler start_scheduler probe_scheduler
  start_with_retries containerd start_containerd probe_containerd
  node_import_images
  start_with_retries kubelet start_kubelet probe_kubelet
  start_with_retries kube-proxy start_kube_proxy probe_kube_proxy
  node_ready_message
fi
say "ready in $(elapsed)s (kube-apiserver start to /readyz: ${api_ready_ms} ms); state in $KCP_DIR"

if [[ -n $watch_pid ]]; then
  printf 'KCP_DIR=%s\nKCP_BIN_DIR=%s\nKUBECONFIG=%s\n' "$KCP_DIR" "$BIN" "$KUBECONFIG_PATH" || true
  # The parent has what it needs; from here on it may stop reading or die at any time.
  exec >>"$KCP_DIR/launcher.log" 2>&1
else
  printf 'export KUBECONFIG=%s\n' "$KUBECONFIG_PATH" || true
  say "kubectl: $BIN/kubectl; stop with Ctrl-C or: KCP_DIR=$KCP_DIR $0 stop"
fi

# ---------------------------------------------------------------------------------------------
# Supervise: every 0.5 s, check the three components and the watched process. `wait` on a
# background sleep lets a signal's trap run at once instead of after the sleep.
while :; do
  for name in "${COMPONENTS[@]}"; do
    p=${pids[$name]}
    if ! alive "$p"; then
      wait "$p" 2>/dev/null && status=0 || status=$?
      unset "pids[$name]"
      say "$name ($p) exited unexpectedly with status $status; last lines of $KCP_DIR/$name.log:"
      tail -n 40 "$KCP_DIR/$name.log" >&2 2>/dev/null
      exit 1
    fi
  done
  check_watched
  sleep 0.5 &
  sleeper=$!
  wait "$sleeper" || true
  sleeper=
done
