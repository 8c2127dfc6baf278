# Shared by the control-plane scripts: versions and cache locations.
# shellcheck shell=bash
CP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$CP_DIR/versions.env"
CACHE_ROOT=${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}
K8S_BIN_DIR=$CACHE_ROOT/k8s/$K8S_VERSION-etcd-$ETCD_VERSION
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { printf '[control-plane] error: %s\n' "$*" >&2; exit 1; }

# Where ready binaries are: KUBEBUILDER_ASSETS (the envtest convention) wins over our cache.
control_plane_bin_dir() {
  if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then echo "$KUBEBUILDER_ASSETS"; else echo "$K8S_BIN_DIR"; fi
}
