#!/usr/bin/env bash
# The CRDs of the verifiers whose recipes the README shows (Istio's RequestAuthentication,
# Envoy Gateway's SecurityPolicy), from the Go module proxy, cached by version outside the repo.
# Prints the directory holding them. tests/consumer_recipes.rs applies the README's snippets
# against them on the test apiserver.
set -euo pipefail

ISTIO_API=v1.32.0
ENVOY_GATEWAY=v1.9.1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator/consumers/istio-api-$ISTIO_API-envoy-gateway-$ENVOY_GATEWAY"

if [[ ! -f $CACHE/done ]]; then
  mkdir -p "$CACHE"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # A throw-away module: `go mod download` of a module outside any module needs none, but
  # GOFLAGS from the caller must not make it look for one.
  dirs=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json \
    "istio.io/api@$ISTIO_API" "github.com/envoyproxy/gateway@$ENVOY_GATEWAY" |
    python3 -c 'import json,sys
text = sys.stdin.read()
decoder, at = json.JSONDecoder(), 0
while at < len(text.strip()):
    obj, end = decoder.raw_decode(text, at)
    if "Error" in obj: sys.exit("go mod download: " + obj["Error"])
    print(obj["Dir"]); at = end
    while at < len(text) and text[at].isspace(): at += 1')
  istio=$(grep 'istio.io/api@' <<<"$dirs")
  gateway=$(grep 'envoyproxy/gateway@' <<<"$dirs")
  cp "$istio/kubernetes/customresourcedefinitions.gen.yaml" "$CACHE/istio.yaml"
  # The chart wraps the CRD in a Helm conditional: drop the template lines.
  grep -v '^{{' "$gateway/charts/gateway-crds-helm/templates/generated/gateway.envoyproxy.io_securitypolicies.yaml" \
    >"$CACHE/envoy-gateway-securitypolicies.yaml"
  touch "$CACHE/done"
fi
echo "$CACHE"
