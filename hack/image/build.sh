#!/usr/bin/env bash
# hack/image/build.sh [--load CONTAINERD_SOCKET]
#
# Builds the operator image without a Docker engine or a registry (`make image`):
#   1. `cargo build --locked --profile dist --bin jwks-operator`, stripped, as in the Dockerfile;
#   2. hack/image/rootfs.sh assembles the root filesystem, the same tree the Dockerfile's build
#      stage makes in /rootfs;
#   3. buildah puts it in a `FROM scratch` image configured with the ENTRYPOINT, CMD, USER and
#      EXPOSE of the Dockerfile's runtime stage (read from the Dockerfile by runtime-stage.py, so
#      the two cannot drift; with the PATH and WORKDIR `docker build` adds), commits it as localhost/jwks-operator:<Cargo.toml version>
#      (IMAGE_TAG overrides the tag) and writes target/image/jwks-operator.oci.tar;
#   4. with --load, imports that archive into the containerd at CONTAINERD_SOCKET, namespace
#      k8s.io (the kubelet's), as `ctr images import` does.
#
# buildah keeps its storage (vfs driver, no overlay or fuse needed) in
# ${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/jwks-operator}/buildah; each build replaces
# the previous image of the same name there. File mtimes and the image's creation time are
# SOURCE_DATE_EPOCH, by default the time of the last commit, so a rebuild of the same commit
# gives the same image ID. Logs go to stderr, prefixed [image]; the last line on stdout is the
# image reference. Runs as root, or re-runs itself in `buildah unshare` (rootless buildah).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
say() { printf '[image] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
usage() { echo "usage: $0 [--load CONTAINERD_SOCKET]" >&2; exit 2; }

load=""
args=("$@")
while (($#)); do
  case $1 in
    --load) (($# >= 2)) || usage; load=$2; shift 2 ;;
    --load=*) load=${1#--load=}; shift ;;
    -h | --help) usage ;;
    *) say "unknown argument: $1"; usage ;;
  esac
done
if [[ -n $load && ! -S $load ]]; then
  die "--load $load: not a socket (the containerd socket, e.g. /run/containerd/containerd.sock)"
fi

# Owners other than the caller (/home/nonroot is 65532's) and `buildah mount` need root; a
# user namespace gives it without privileges.
if [[ $(id -u) != 0 ]]; then
  [[ -z ${_JWKS_IMAGE_UNSHARED:-} ]] || die "still not root inside buildah unshare"
  say "not root: re-running in buildah unshare"
  exec env _JWKS_IMAGE_UNSHARED=1 buildah unshare -- "$0" "${args[@]}"
fi

for tool in cargo strip ldd buildah python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (hack/ensure-tools.sh installs buildah)"
done
[[ -z $load ]] || command -v ctr >/dev/null || die "ctr is missing (Debian's containerd has it)"

version=$(sed -n 's/^version = "\(.*\)"/\1/p;T;q' "$root/Cargo.toml")
tag=${IMAGE_TAG:-$version}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid image tag: '$tag'"
ref=localhost/jwks-operator:$tag
cache=${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}
buildah=(buildah --root "$cache/buildah/root" --runroot "$cache/buildah/run" --storage-driver vfs)
out=$root/target/image
archive=$out/jwks-operator.oci.tar
# Not exported: cc-based build scripts (aws-lc-sys) rerun when SOURCE_DATE_EPOCH changes, so
# cargo would rebuild here what check.sh and the tests just built.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}

# This run's files (make dev and make test may build at the same time); only the archive and
# the stripped binary (hack/image/check.sh runs rootfs.sh on it) are moved to $out at the end.
mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
container=""
cleanup() {
  if [[ -n $container ]]; then
    "${buildah[@]}" rm "$container" >/dev/null 2>&1 || say "could not remove the working container $container"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The runtime stage first: a Dockerfile build.sh cannot follow fails before the long build.
python3 "$root/hack/image/runtime-stage.py" "$root/Dockerfile" --buildah >"$work/config.args"
mapfile -d '' config <"$work/config.args"

start=$SECONDS
say "cargo build --locked --profile dist --bin jwks-operator"
cargo build --locked --profile dist --bin jwks-operator --manifest-path "$root/Cargo.toml" >&2
cp "${CARGO_TARGET_DIR:-$root/target}/dist/jwks-operator" "$work/jwks-operator"
strip "$work/jwks-operator"
SOURCE_DATE_EPOCH=$epoch "$root/hack/image/rootfs.sh" "$work/jwks-operator" "$work/rootfs"
say "buildah: $ref from scratch (storage: $cache/buildah)"
container=$("${buildah[@]}" from --quiet --name "jwks-operator-build-$$" scratch)
mnt=$("${buildah[@]}" mount "$container")
# cp -a keeps owners, modes, symlinks and mtimes, as COPY --from=build does. (`buildah copy`
# would make everything root's, /home/nonroot included.)
cp -a "$work/rootfs/." "$mnt/"
"${buildah[@]}" umount "$container" >/dev/null
"${buildah[@]}" config "${config[@]}" --created-by "COPY --from=build /rootfs / # hack/image/build.sh" "$container"
# --identity-label=false: no io.buildah.version label, which a Docker build would not have.
"${buildah[@]}" commit --quiet --rm --identity-label=false --timestamp "$epoch" "$container" "$ref" >/dev/null
container=""
# The previous image of this name, now untagged, and any other leftover.
"${buildah[@]}" rmi --prune >/dev/null 2>&1 || true

say "writing $archive"
"${buildah[@]}" push --quiet "$ref" "oci-archive:$work/image.oci.tar:$ref" >&2
mv -f "$work/image.oci.tar" "$archive"
mv -f "$work/jwks-operator" "$out/jwks-operator"
id=$("${buildah[@]}" images --no-trunc --format '{{.ID}}' "$ref")
size=$(du -k "$archive" | cut -f1)
say "built $ref (image ${id#sha256:}; archive $((size / 1024)) MiB) in $((SECONDS - start)) s"

if [[ -n $load ]]; then
  say "ctr --address $load -n k8s.io images import --all-platforms $archive"
  # ctr names the image after the archive's org.opencontainers.image.ref.name, $ref.
  ctr --address "$load" -n k8s.io images import --all-platforms "$archive" >&2
  ctr --address "$load" -n k8s.io images ls -q "name==$ref" | grep -qx "$ref" \
    || die "containerd at $load has no image $ref after the import"
  say "loaded $ref into containerd at $load (namespace k8s.io)"
fi
echo "$ref"
