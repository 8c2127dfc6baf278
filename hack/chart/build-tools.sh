#!/usr/bin/env bash
# Build helm and kubeconform from the Go module proxy into versioned caches outside the
# repository, and print two lines: HELM=<path> and KUBECONFORM=<path>. Reuses a complete cache.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# build NAME VERSION WRAPPER-DIR PACKAGE LDFLAGS -> prints the binary's path
build() {
  local name=$1 version=$2 wrapper=$CHART_TOOLS_DIR/$3 pkg=$4 ldflags=$5
  local dir=$TOOLS_CACHE/$name-$version want
  # The stamp is written last and names the exact inputs, so a half-finished or stale build is
  # never taken for a complete one (the inputs: versions, wrapper module, link flags).
  want=$( (cat "$CHART_TOOLS_DIR/versions.env" "$wrapper"/go.{mod,sum}; echo "$ldflags") | sha256sum | cut -d' ' -f1)
  if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$want" && -x $dir/$name ]]; then
    log "reusing $dir"
    echo "$dir/$name"; return
  fi
  command -v go >/dev/null || die "go is not installed (Go >= 1.26 builds $name)"
  grep -qF "$pkg" "$wrapper/go.mod" || die "$wrapper/go.mod has no tool $pkg; run hack/chart/update-wrappers.sh"
  mkdir -p "$dir"
  rm -f "$dir/.complete"
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$dir/.build.XXXXXX")
  log "building $name $version (Go $(go env GOVERSION), CGO_ENABLED=0) into $dir"
  (cd "$wrapper" && go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$pkg") || { rm -rf "$tmp"; die "building $name failed"; }
  mv -f "$tmp/$name" "$dir/$name"
  rm -rf "$tmp"
  echo "$want" > "$dir/.complete"
  log "$name built in $((SECONDS - start))s"
  echo "$dir/$name"
}

grep -q "helm.sh/helm/v3 $HELM_VERSION" "$CHART_TOOLS_DIR/helm/go.mod" \
  || die "helm/go.mod does not match HELM_VERSION=$HELM_VERSION; run hack/chart/update-wrappers.sh"
grep -q "github.com/yannh/kubeconform $KUBECONFORM_VERSION" "$CHART_TOOLS_DIR/kubeconform/go.mod" \
  || die "kubeconform/go.mod does not match KUBECONFORM_VERSION=$KUBECONFORM_VERSION; run hack/chart/update-wrappers.sh"

# helm's Makefile stamps its version and the Kubernetes version it defaults to (from the
# client-go it is built with); without them `helm version` and `.Capabilities.KubeVersion` are
# placeholders.
k8s=$(sed -n 's|^\s*k8s.io/client-go v0\.\([0-9]*\)\.[0-9]*.*|\1|p' "$CHART_TOOLS_DIR/helm/go.mod")
[[ -n $k8s ]] || die "cannot read the client-go version from helm/go.mod"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s"
done
helm=$(build helm "$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm "$helm_ldflags")
kubeconform=$(build kubeconform "$KUBECONFORM_VERSION" kubeconform \
  github.com/yannh/kubeconform/cmd/kubeconform "-s -w -X main.version=$KUBECONFORM_VERSION")
echo "HELM=$helm"
echo "KUBECONFORM=$kubeconform"
