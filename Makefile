# The two commands of the README: `make dev` (run it locally) and `make test` (everything CI runs).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: test dev lint crds bench bench-server bench-scale bench-soak control-plane tools chart image

## Everything CI runs: tools, control plane and node, formatting, lints, the image (built and
## checked first: the end-to-end test on the node runs it), then the unit, property,
## integration, interop, chart and end-to-end tests.
test: tools control-plane lint
	hack/chart/build-tools.sh >/dev/null
	hack/consumers/fetch-crds.sh >/dev/null
	hack/image/check.sh
	mkdir -p target
	cargo test --locked --no-fail-fast --lib --bins --tests 2>&1 | tee target/test-output.log
	hack/test-summary.sh target/test-output.log

## The operator image without a Docker engine or a registry (buildah): localhost/jwks-operator:<version>
## and target/image/jwks-operator.oci.tar. `make image LOAD=/run/containerd/containerd.sock` also
## imports it into that containerd (namespace k8s.io). `make test` checks it (hack/image/check.sh).
image:
	hack/image/build.sh $(if $(LOAD),--load $(LOAD))

## A local cluster (control plane and node), the operator installed from the chart, the examples
## applied, the JWKS forwarded to 127.0.0.1:8080; in the foreground (Ctrl-C stops it).
dev:
	hack/dev.sh

tools:
	hack/ensure-tools.sh

control-plane:
	hack/control-plane/build.sh >/dev/null

## The Helm chart (charts/jwks-operator): builds helm and kubeconform (cached), then lints it,
## checks it against the apiserver's schemas, applies it and checks the RBAC it grants.
chart: control-plane
	hack/chart/build-tools.sh >/dev/null
	cargo test --locked --test chart

lint:
	cargo fmt --all --check
	cargo clippy --locked --all-targets -- -D warnings

## Regenerate crds/ from the Rust types, and the chart's copy (tests fail when either differs).
crds:
	cargo run --locked --quiet -- crds --out-dir crds
	cp crds/*.yaml charts/jwks-operator/crds/

## Key-engine benchmark (numbers in docs/benchmarks.md).
bench:
	cargo bench --locked --bench keys

## JWKS server vs nginx on loopback with wrk (installs nginx and wrk from Debian if missing).
bench-server:
	hack/bench-server.sh

## The operator with 1,000 keys on the test control plane: seconds, writes per key, peak RSS and
## CPU, for creating them and rotating them all; and the apiserver alone doing the same writes.
bench-scale: control-plane
	hack/bench-scale.sh scale

## The operator over a long run (a few keys rotating every few seconds): RSS every minute.
bench-soak: control-plane
	hack/bench-scale.sh soak
