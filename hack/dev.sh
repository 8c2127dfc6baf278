#!/usr/bin/env bash
# `make dev`: a local cluster (control plane and one node) with the operator installed from the
# chart as pods, the examples applied, and the JWKS served by the publication's own server pods,
# forwarded to 127.0.0.1:8080. In the foreground; Ctrl-C stops it and removes everything.
#
# The node needs root (containerd, network namespaces, iptables). Without root, or with
# JWKS_DEV_NODE=0, the operator and the JWKS server run as processes on this machine instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '[dev] %s\n' "$*" >&2; }
t0=$SECONDS

node=${JWKS_DEV_NODE:-1}
if ((node)) && [[ $(id -u) != 0 ]]; then
  say "not root: no node (containerd and the kubelet need root); the operator runs as a process"
  node=0
fi

"$root/hack/ensure-tools.sh"
bin_dir=$("$root/hack/control-plane/build.sh" | tail -1)
kubectl=("$bin_dir/kubectl")
port=${JWKS_PORT:-8080}

state=$(mktemp -d "${TMPDIR:-/tmp}/jwks-operator-dev.XXXXXX")
children=()
trap 'kill -TERM "${children[@]}" 2>/dev/null; wait "${children[@]}" 2>/dev/null; rm -rf "$state"' EXIT
trap 'exit 130' INT TERM

# start_cluster ENV...: the control plane (and node) in the background, stopped with this script.
start_cluster() {
  env "$@" KCP_CRDS="$root/crds" "$root/hack/control-plane/start.sh" --watch-pid $$ >"$state/launcher.out" &
  launcher=$!
  children+=("$launcher")
  for _ in $(seq 6000); do
    grep -q '^KUBECONFIG=' "$state/launcher.out" 2>/dev/null && break
    kill -0 "$launcher" 2>/dev/null || { say "the cluster failed to start (its log is above)"; exit 1; }
    sleep 0.1
  done
  kubeconfig=$(sed -n 's/^KUBECONFIG=//p' "$state/launcher.out")
  [[ -n $kubeconfig ]] || { say "the cluster did not become ready"; exit 1; }
  export KUBECONFIG=$kubeconfig
}

wait_served() { # pid-of-the-forwarder-or-server
  for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$port/.well-known/jwks.json" >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || { say "nothing serves 127.0.0.1:$port (is the port free? set JWKS_PORT)"; exit 1; }
    sleep 0.1
  done
  say "127.0.0.1:$port does not answer"
  exit 1
}

if ((node)); then
  helm=$("$root/hack/chart/build-tools.sh" | sed -n 's/^HELM=//p')
  say "building the operator image (hack/image/build.sh)"
  image=$("$root/hack/image/build.sh" | tail -1)
  say "starting the control plane and a node (about a minute)"
  start_cluster KCP_NODE=1 KCP_NODE_IMAGES="$root/target/image/jwks-operator.oci.tar"
  export HELM_CACHE_HOME=$state/helm/cache HELM_CONFIG_HOME=$state/helm/config HELM_DATA_HOME=$state/helm/data
  say "helm install jwks-operator charts/jwks-operator (image $image, 2 replicas, leader election)"
  "$helm" install jwks-operator "$root/charts/jwks-operator" --namespace jwks-system --create-namespace \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
    --wait --timeout 5m >&2
  "${kubectl[@]}" apply --server-side -f "$root/examples/" >&2
  "${kubectl[@]}" wait --for=condition=Ready signingkeys --all -A --timeout=120s >&2
  "${kubectl[@]}" wait --for=condition=Ready jwkspublication/main --timeout=300s >&2
  "${kubectl[@]}" get pods -A -o wide >&2
  # The publication's Service, as a user reaches it from outside the cluster.
  "${kubectl[@]}" port-forward --address 127.0.0.1 service/main-jwks "$port:8080" >"$state/port-forward.log" 2>&1 &
  children+=($!)
  wait_served $!
  served_by="the publication's server pods, through its Service (kubectl port-forward)"
  operator_logs="kubectl logs -n jwks-system deployment/jwks-operator"
else
  start_cluster
  operator_bin="$root/target/debug/jwks-operator"
  cargo build --locked --quiet --manifest-path "$root/Cargo.toml"
  "$operator_bin" run 2> >(sed -u 's/^/[operator] /' >&2) &
  children+=($!)
  "${kubectl[@]}" apply --server-side -f "$root/examples/" >&2
  "${kubectl[@]}" wait --for=condition=Ready signingkeys --all -A --timeout=60s >&2
  "${kubectl[@]}" wait --for=condition=Published jwkspublication/main --timeout=60s >&2
  # No kubelet: the publication's server Deployment never starts a pod; serve its ConfigMap
  # from this machine instead, watching it through the API.
  "$operator_bin" serve --configmap default/main-jwks --listen "127.0.0.1:$port" 2> >(sed -u 's/^/[serve] /' >&2) &
  children+=($!)
  wait_served $!
  served_by="jwks-operator serve on this machine (no node: not root, or JWKS_DEV_NODE=0)"
  operator_logs="log lines [operator] above"
fi

cat >&2 <<MSG

Ready in $((SECONDS - t0)) s. The operator runs, the examples are applied, and their public
keys are served by $served_by:

  curl -s http://127.0.0.1:$port/.well-known/jwks.json
  curl -s http://127.0.0.1:$port/.well-known/openid-configuration

  export KUBECONFIG=$KUBECONFIG
  export PATH=$bin_dir:\$PATH
  kubectl get signingkeys,jwkspublications,pods -A
  $operator_logs
  kubectl annotate --overwrite signingkey api-tokens jwks-operator.io/rotate="\$(date -u +%FT%TZ)"
                                         # a new key now, signing 1h later

Press Ctrl-C to stop everything.
MSG
wait -n "${children[@]}"
