#!/usr/bin/env bash
# `make dev`: a local control plane with the CRDs installed, the operator running and examples/
# applied, in the foreground. Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '[dev] %s\n' "$*" >&2; }

"$root/hack/ensure-tools.sh"
bin_dir=$("$root/hack/control-plane/build.sh" | tail -1)
cargo build --locked --quiet --manifest-path "$root/Cargo.toml"

state=$(mktemp -d "${TMPDIR:-/tmp}/jwks-operator-dev.XXXXXX")
operator=
server=
trap 'kill -TERM $server $operator "$launcher" 2>/dev/null; wait $server $operator "$launcher" 2>/dev/null; rm -rf "$state"' EXIT
trap 'exit 130' INT TERM
KCP_CRDS="$root/crds" "$root/hack/control-plane/start.sh" --watch-pid $$ >"$state/launcher.out" &
launcher=$!

say "starting etcd, kube-apiserver and kube-controller-manager (about 10-30 s)"
for _ in $(seq 1800); do
  grep -q '^KUBECONFIG=' "$state/launcher.out" 2>/dev/null && break
  kill -0 "$launcher" 2>/dev/null || { say "the control plane failed to start"; exit 1; }
  sleep 0.1
done
kubeconfig=$(sed -n 's/^KUBECONFIG=//p' "$state/launcher.out")
[[ -n $kubeconfig ]] || { say "the control plane did not become ready"; exit 1; }
export KUBECONFIG=$kubeconfig
operator_bin="$root/target/debug/jwks-operator"
"$operator_bin" run 2> >(sed -u 's/^/[operator] /' >&2) &
operator=$!
"$bin_dir/kubectl" apply --server-side -f "$root/examples/" >&2
"$bin_dir/kubectl" wait --for=condition=Ready signingkeys --all -A --timeout=60s >&2
"$bin_dir/kubectl" wait --for=condition=Published jwkspublication/main --timeout=60s >&2
"$operator_bin" status -A >&2

# No kubelet runs here, so the publication's server Deployment never starts a pod: serve the
# same ConfigMap from this machine instead, watching it through the API.
port=${JWKS_PORT:-8080}
"$operator_bin" serve --configmap default/main-jwks --listen "127.0.0.1:$port" 2> >(sed -u 's/^/[serve] /' >&2) &
server=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { say "jwks-operator serve failed to start (is port $port free? set JWKS_PORT)"; exit 1; }
  sleep 0.1
done

cat >&2 <<MSG

The local control plane is up, the operator runs (log lines [operator]), the examples are
applied, and their public keys are served (log lines [serve]):

  curl -s http://127.0.0.1:$port/.well-known/jwks.json
  curl -s http://127.0.0.1:$port/.well-known/openid-configuration

  export KUBECONFIG=$kubeconfig
  export PATH=$bin_dir:\$PATH
  kubectl get signingkeys,jwkspublications
  $operator_bin status                          # session-tokens rotates every 10 minutes
  $operator_bin rotate api-tokens               # a new key, signing 1h later

Press Ctrl-C to stop everything.
MSG
wait -n "$launcher" "$operator" "$server"
