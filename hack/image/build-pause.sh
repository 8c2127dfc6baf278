#!/usr/bin/env bash
# hack/image/build-pause.sh
#
# The pod sandbox ("pause") image for a containerd node, built here because no registry can
# give registry.k8s.io/pause: hack/image/pause/main.go (PID 1 that reaps children and exits 0 on
# SIGINT/SIGTERM) compiled static, alone in a `FROM scratch` image, entrypoint /pause, user
# 65535, referenced as localhost/kcp-pause:3.10 (set containerd's sandbox_image to it).
#
# The OCI archive is cached at $CACHE/node/pause-<hash>.oci.tar, the hash covering main.go,
# go.mod and this script; an existing one is reused. The last line on stdout is its path
# (`ctr -n k8s.io images import --all-platforms PATH` names it localhost/kcp-pause:3.10);
# logs go to stderr, prefixed [image]. Runs as root, or in `buildah unshare`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { printf '[image] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
(($# == 0)) || { echo "usage: $0" >&2; exit 2; }

ref=localhost/kcp-pause:3.10
cache=${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}
hash=$(cat "$here/pause/main.go" "$here/pause/go.mod" "$here/build-pause.sh" | sha256sum | cut -c1-12)
archive=$cache/node/pause-$hash.oci.tar
if [[ -f $archive ]]; then
  say "pause image: reusing $archive"
  echo "$archive"
  exit 0
fi

if [[ $(id -u) != 0 ]]; then
  [[ -z ${_JWKS_IMAGE_UNSHARED:-} ]] || die "still not root inside buildah unshare"
  say "not root: re-running in buildah unshare"
  exec env _JWKS_IMAGE_UNSHARED=1 buildah unshare -- "$0"
fi
for tool in go buildah; do
  command -v "$tool" >/dev/null || die "$tool is missing (hack/ensure-tools.sh installs buildah)"
done
buildah=(buildah --root "$cache/buildah/root" --runroot "$cache/buildah/run" --storage-driver vfs)

work=$(mktemp -d)
container=""
cleanup() {
  if [[ -n $container ]]; then
    "${buildah[@]}" rm "$container" >/dev/null 2>&1 || say "could not remove the working container $container"
  fi
  rm -rf "$work"
  rm -f "$archive.tmp.$$"
}
trap cleanup EXIT

say "go build hack/image/pause"
mkdir -p "$work/rootfs"
(cd "$here/pause" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go build -trimpath -buildvcs=false -ldflags '-s -w' -o "$work/rootfs/pause" .) >&2
chmod 0755 "$work/rootfs/pause"
touch -d @0 "$work/rootfs/pause"

say "buildah: $ref from scratch"
container=$("${buildah[@]}" from --quiet --name "kcp-pause-build-$$" scratch)
mnt=$("${buildah[@]}" mount "$container")
cp -a "$work/rootfs/pause" "$mnt/pause"
chown 0:0 "$mnt/pause"
"${buildah[@]}" umount "$container" >/dev/null
"${buildah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 \
  --created-by "COPY pause /pause # hack/image/build-pause.sh" "$container"
"${buildah[@]}" commit --quiet --rm --identity-label=false --timestamp 0 "$container" "$ref" >/dev/null
container=""

mkdir -p "$cache/node"
"${buildah[@]}" push --quiet "$ref" "oci-archive:$archive.tmp.$$:$ref" >&2
mv -f "$archive.tmp.$$" "$archive"
# The archive is the cache; the image need not stay in buildah's storage.
"${buildah[@]}" rmi "$ref" >/dev/null 2>&1 || true
"${buildah[@]}" rmi --prune >/dev/null 2>&1 || true
say "pause image: $archive"
echo "$archive"
