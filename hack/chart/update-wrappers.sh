#!/usr/bin/env bash
# Regenerate the wrapper modules (helm/go.mod, kubeconform/go.mod and their go.sum) for the
# versions in versions.env.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
export GOFLAGS=-mod=mod

cd "$CHART_TOOLS_DIR/helm"
printf 'module local.invalid/jwks-operator-helm-bin\n\ngo 1.24.0\n' > go.mod
rm -f go.sum
go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
go mod tidy

cd "$CHART_TOOLS_DIR/kubeconform"
printf 'module local.invalid/jwks-operator-kubeconform-bin\n\ngo 1.24.0\n' > go.mod
rm -f go.sum
go get -tool "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
go mod tidy
log "wrappers regenerated for helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION"
