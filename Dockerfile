# syntax=docker/dockerfile:1.7
# The operator image: one static-enough binary that runs the controllers (`run`, the default)
# and the JWKS server (`serve`, used by the Deployments the operator creates).
#
#   docker build -t jwks-operator:0.1.0 .
#
# Build stage: the same command `make test` (hack/image/check.sh) uses to check the binary.
# The slim Rust image has gcc, which is all aws-lc-rs needs to build its C library.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# `dist` is `release` with fat LTO and one codegen unit: a smaller binary, so `serve` stays
# under 10 MiB resident (docs/benchmarks.md).
RUN cargo build --locked --profile dist --bin jwks-operator \
 && strip target/dist/jwks-operator

# Runtime: glibc and CA certificates, no shell, no package manager, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/jwks-operator /usr/local/bin/jwks-operator
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/jwks-operator"]
CMD ["run", "--log-format", "json"]
