# syntax=docker/dockerfile:1.7
# The operator image: one glibc binary that runs the controllers (`run`, the default) and the
# JWKS server (`serve`, used by the Deployments the operator creates), on a `FROM scratch` root
# filesystem that hack/image/rootfs.sh assembles from the binary and the libraries `ldd` names.
#
#   docker build -t jwks-operator:0.1.0 .
#
# Without Docker or a registry, `make image` (hack/image/build.sh) builds the same image with
# buildah: the same cargo command, the same rootfs.sh, and ENTRYPOINT, CMD, USER and EXPOSE read
# from this file's runtime stage. `make test` (hack/image/check.sh) checks that they agree.
#
# Build stage: the slim Rust image has gcc, which is all aws-lc-rs needs to build its C library.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# `dist` is `release` with fat LTO and one codegen unit: a smaller binary, so `serve` stays
# under 10 MiB resident (docs/benchmarks.md).
RUN cargo build --locked --profile dist --bin jwks-operator \
 && strip target/dist/jwks-operator
# /rootfs: the binary, its shared libraries and dynamic loader, CA certificates, /etc/passwd and
# /etc/group with root and nonroot (65532), /home/nonroot and /tmp. Nothing else.
COPY hack/image/rootfs.sh hack/image/rootfs.sh
RUN hack/image/rootfs.sh target/dist/jwks-operator /rootfs

# Runtime: exactly the tree above (COPY from a stage keeps its owners and modes): glibc and CA
# certificates, no shell, no package manager, non-root. hack/image/build.sh requires this stage
# to be FROM scratch, this COPY, and then only USER, EXPOSE, ENTRYPOINT and CMD.
FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/jwks-operator"]
CMD ["run", "--log-format", "json"]
