#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kubectl, etcd and the node's kube-scheduler,
# kubelet and kube-proxy from the Go module proxy into a
# versioned cache outside the repository, and print that directory. Reuses a complete cache.
# With KUBEBUILDER_ASSETS set, checks the binaries there instead of building.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy kcp-cri-clean)

if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
  for b in "${BINARIES[@]}"; do
    [[ -x $KUBEBUILDER_ASSETS/$b ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b"
  done
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi

# The stamp is written last and names the exact inputs, so a half-finished or stale build is
# never taken for a complete one.
stamp_content() {
  cat "$CP_DIR/versions.env" "$CP_DIR"/k8s/go.{mod,sum} "$CP_DIR"/k8s/cmd/*/*.go "$CP_DIR"/etcd/go.{mod,sum} \
    | sha256sum | cut -d' ' -f1
}
want=$(stamp_content)
if [[ -f $K8S_BIN_DIR/.complete && $(cat "$K8S_BIN_DIR/.complete") == "$want" ]]; then
  log "reusing $K8S_BIN_DIR"
  echo "$K8S_BIN_DIR"; exit 0
fi

command -v go >/dev/null || die "go is not installed (Go >= 1.24 is needed to build the control plane)"
grep -q "k8s.io/kubernetes $K8S_VERSION" "$CP_DIR/k8s/go.mod" \
  || die "k8s/go.mod does not match K8S_VERSION=$K8S_VERSION; run hack/control-plane/update-wrappers.sh"
grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$CP_DIR/etcd/go.mod" \
  || die "etcd/go.mod does not match ETCD_VERSION=$ETCD_VERSION; run hack/control-plane/update-wrappers.sh"

mkdir -p "$K8S_BIN_DIR"
rm -f "$K8S_BIN_DIR/.complete"
tmp=$(mktemp -d "$K8S_BIN_DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X '$p.gitVersion=$K8S_VERSION' -X '$p.gitMajor=1' -X '$p.gitMinor=$minor' -X '$p.gitTreeState=clean'"
done

start=$SECONDS
log "building etcd $ETCD_VERSION (Go $(go env GOVERSION), CGO_ENABLED=0) into $K8S_BIN_DIR"
(cd "$CP_DIR/etcd" && go build -trimpath \
  -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
  -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
for tool in kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy; do
  log "building $tool $K8S_VERSION ($((SECONDS - start))s so far)"
  (cd "$CP_DIR/k8s" && go build -trimpath -ldflags "$ldflags" -o "$tmp/$tool" "k8s.io/kubernetes/cmd/$tool")
done
# The node's teardown helper (node.sh), from this module's own cmd/.
(cd "$CP_DIR/k8s" && go build -trimpath -ldflags "-s -w" -o "$tmp/kcp-cri-clean" ./cmd/kcp-cri-clean)
"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version | sed -n 1p >&2 # not head: etcd would die of SIGPIPE, failing the pipeline
for b in "${BINARIES[@]}"; do mv -f "$tmp/$b" "$K8S_BIN_DIR/$b"; done
echo "$want" > "$K8S_BIN_DIR/.complete"
log "control plane built in $((SECONDS - start))s"
echo "$K8S_BIN_DIR"
