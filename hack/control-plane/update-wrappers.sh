#!/usr/bin/env bash
# Regenerate the wrapper modules (k8s/go.mod, etcd/go.mod and their go.sum) for the versions in
# versions.env. The staging-module replace list is read from the real k8s.io/kubernetes go.mod of
# that release, so it is right for every version (see ../../docs/control-plane.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export GOFLAGS=-mod=mod
staging=v0.${K8S_VERSION#v1.}

cd "$CP_DIR/k8s"
kmod=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
# The same go and godebug lines as Kubernetes' own go.mod, so the binaries behave as released.
{
  printf 'module local.invalid/jwks-operator-k8s-bins\n\n'
  grep -E '^go [0-9]' "$kmod"
  grep -E '^godebug ' "$kmod" || true
} > go.mod
rm -f go.sum
for m in $(sed -n 's|^\s*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*|\1|p' "$kmod"); do
  go mod edit -replace="$m=$m@$staging"
done
# The node's kubelet, kube-proxy and kube-scheduler come from the same module (node.sh).
for tool in kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy; do
  go get -tool "k8s.io/kubernetes/cmd/$tool@$K8S_VERSION"
done
go mod tidy

cd "$CP_DIR/etcd"
printf 'module local.invalid/jwks-operator-etcd-bin\n\ngo 1.24.0\n' > go.mod
rm -f go.sum
go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy
log "wrappers regenerated for Kubernetes $K8S_VERSION, etcd $ETCD_VERSION"
