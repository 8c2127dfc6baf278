#!/usr/bin/env bash
# Checks the container image without a Docker engine (part of `make test`):
#  1. hadolint on the Dockerfile (installed from PyPI into a cache);
#  2. the binary as the Dockerfile's build stage builds it, run the ways the image and the
#     Deployments it creates run it;
#  3. the image hack/image/build.sh builds (`make image`) is the one the Dockerfile describes:
#     the Dockerfile's runtime stage is `FROM scratch` + `COPY --from=build /rootfs /` of the tree
#     hack/image/rootfs.sh makes; the image's ENTRYPOINT, CMD, USER and exposed ports are the
#     Dockerfile's (PATH and WORKDIR those `docker build` gives FROM scratch), nothing more; its
#     files are exactly rootfs.sh's output (owners, modes, contents); it has no shell; and the
#     binary runs from the image's root filesystem alone, as 65532 (chroot, empty environment):
#     --version, `serve` answering, the CA certificates found;
#  4. the pause image (hack/image/build-pause.sh): /pause, user 65535, runs, reaps an orphan as
#     PID 1 of a PID namespace, and exits 0 on SIGTERM.
# Needs root (chroot, buildah mount), or re-runs itself in `buildah unshare`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
say() { printf '[image] %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

if [[ $(id -u) != 0 ]]; then
  [[ -z ${_JWKS_IMAGE_UNSHARED:-} ]] || fail "still not root inside buildah unshare"
  say "not root: re-running in buildah unshare"
  exec env _JWKS_IMAGE_UNSHARED=1 buildah unshare -- "$0" "$@"
fi

cache_root=${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}
cache="$cache_root/tools/hadolint-$(sha256sum "$root/hack/image/requirements.txt" | cut -c1-12)"
buildah=(buildah --root "$cache_root/buildah/root" --runroot "$cache_root/buildah/run" --storage-driver vfs)
work=$(mktemp -d)
server="" container="" pause_ns="" pid1=""
cleanup() {
  [[ -z $server ]] || kill "$server" 2>/dev/null || true
  [[ -z $pid1 ]] || kill -KILL "$pid1" 2>/dev/null || true
  [[ -z $pause_ns ]] || kill "$pause_ns" 2>/dev/null || true
  [[ -z $container ]] || "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# serve_check URL_BASE PID: waits for /readyz, then expects the empty JWKS.
serve_check() {
  for _ in $(seq 100); do
    curl -fsS "$1/readyz" >/dev/null 2>&1 && break
    kill -0 "$2" 2>/dev/null || fail "serve exited before answering"
    sleep 0.1
  done
  body=$(curl -fsS "$1/.well-known/jwks.json") || fail "serve did not answer at $1"
  [[ $body == '{"keys":[]}' ]] || fail "serve returned: $body"
}

# 1. hadolint.
if [[ ! -x $cache/bin/hadolint ]]; then
  say "installing hadolint into $cache"
  rm -rf "$cache"
  python3 -m venv "$cache" >&2
  "$cache/bin/pip" install --quiet --no-deps --require-hashes -r "$root/hack/image/requirements.txt" >&2
fi
say "hadolint Dockerfile"
"$cache/bin/hadolint" "$root/Dockerfile"

# 2. The Dockerfile's build stage: `cargo build --locked --profile dist --bin jwks-operator`.
say "cargo build --locked --profile dist --bin jwks-operator"
cargo build --locked --profile dist --bin jwks-operator --manifest-path "$root/Cargo.toml" >&2
bin="${CARGO_TARGET_DIR:-$root/target}/dist/jwks-operator"

expected_version="jwks-operator $(sed -n 's/^version = "\(.*\)"/\1/p;T;q' "$root/Cargo.toml")"
version=$("$bin" --version)
[[ $version == "$expected_version" ]] || fail "unexpected --version: $version"
"$bin" run --help | grep -q -- '--server-image' || fail "run --help lacks --server-image"

# `serve` as the server Deployment runs it: a read-only content directory, nothing written.
content=$work/content
mkdir "$content"
printf '{"keys":[]}' >"$content/jwks.json"
printf '300' >"$content/cache-max-age"
chmod -R a-w "$content"
port=$(free_port)
"$bin" serve --dir "$content" --listen "127.0.0.1:$port" --log-format json 2>/dev/null &
server=$!
serve_check "http://127.0.0.1:$port" "$server"
kill "$server"
wait "$server" 2>/dev/null || true
server=""
say "ok: $version; run --help; serve answers from a read-only directory"

# 3. The image. First the Dockerfile: both ways of building must make the same tree.
dockerfile=$root/Dockerfile
expected=$(python3 "$root/hack/image/runtime-stage.py" "$dockerfile") # FROM scratch + COPY --from=build /rootfs /
build_stage=$(sed -n '/^FROM .* AS build$/,/^FROM /p' "$dockerfile" | tr -s ' \\\n' ' ')
for step in 'RUN cargo build --locked --profile dist --bin jwks-operator && strip target/dist/jwks-operator' \
  'RUN hack/image/rootfs.sh target/dist/jwks-operator /rootfs'; do
  [[ $build_stage == *"$step"* ]] \
    || fail "the Dockerfile's build stage lacks \`$step\`, which hack/image/build.sh does too"
done

say "hack/image/build.sh"
ref=$("$root/hack/image/build.sh")
ref=${ref##*$'\n'}
[[ $ref == localhost/jwks-operator:* ]] || fail "build.sh printed '$ref', not an image reference"

"${buildah[@]}" inspect --type image "$ref" >"$work/inspect.json"
python3 - "$work/inspect.json" "$expected" <<'EOF' || fail "the image's configuration is not the Dockerfile's runtime stage"
import json, sys
image = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2])
config = image["OCIv1"].get("config", {})
got = {
    "entrypoint": config.get("Entrypoint"),
    "cmd": config.get("Cmd"),
    "user": config.get("User"),
    "expose": sorted(config.get("ExposedPorts") or {}),
    "env": config.get("Env"),
    "workdir": config.get("WorkingDir"),
}
bad = False
for key, value in got.items():
    expected = sorted(want[key]) if key == "expose" else want[key]
    if value != expected:
        print(f"[image] {key}: image {value!r}, Dockerfile {expected!r}", file=sys.stderr)
        bad = True
# Nothing the Dockerfile does not declare (a LABEL, a VOLUME, a STOPSIGNAL, a HEALTHCHECK).
extra = {k: v for k, v in config.items()
         if v and k not in ("Entrypoint", "Cmd", "User", "ExposedPorts", "Env", "WorkingDir")}
if extra:
    print(f"[image] configuration the Dockerfile does not declare: {extra}", file=sys.stderr)
    bad = True
layers = image["OCIv1"]["rootfs"]["diff_ids"]
if len(layers) != 1:
    print(f"[image] {len(layers)} layers, not one (COPY --from=build /rootfs /)", file=sys.stderr)
    bad = True
sys.exit(bad)
EOF

# The image's files against a fresh rootfs.sh run on the same binary (build.sh's stripped copy).
"$root/hack/image/rootfs.sh" "$root/target/image/jwks-operator" "$work/expected"
container=$("${buildah[@]}" from --quiet --name "jwks-operator-check-$$" "$ref")
mnt=$("${buildah[@]}" mount "$container")
tree() { # path, type, mode, owner, symlink target; then the regular files' sha256
  (cd "$1" && find . -mindepth 1 -printf '%p %y %#m %U:%G %l\n' | LC_ALL=C sort \
    && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}
tree "$work/expected" >"$work/expected.tree"
tree "$mnt" >"$work/image.tree"
diff -u "$work/expected.tree" "$work/image.tree" >&2 \
  || fail "the image's files differ from hack/image/rootfs.sh's output (- rootfs.sh, + image)"
shells=$(cd "$mnt" && find . \( -name sh -o -name bash -o -name dash -o -name ash -o -name zsh \
  -o -name busybox -o -name 'python*' -o -name perl \) -printf '%p ')
[[ -z $shells && ! -e $mnt/bin/sh && ! -L $mnt/bin/sh ]] || fail "the image has a shell: $shells"
say "ok: $ref: the Dockerfile's ENTRYPOINT, CMD, USER and EXPOSE; rootfs.sh's $(find "$mnt" -mindepth 1 | wc -l) entries; no shell"

# The binary from the image's root filesystem alone: no host file, no environment, user 65532.
chroot=$(command -v chroot)
in_image() { env -i "$chroot" --userspec=65532:65532 "$mnt" /usr/local/bin/jwks-operator "$@"; }
version=$(in_image --version) || fail "the binary does not start from the image's rootfs"
[[ $version == "$expected_version" ]] || fail "in the image: unexpected --version: $version"
mkdir "$mnt/tmp/content"
printf '{"keys":[]}' >"$mnt/tmp/content/jwks.json"
printf '300' >"$mnt/tmp/content/cache-max-age"
chmod -R a-w "$mnt/tmp/content"
port=$(free_port)
# Not through in_image: $! must be the server itself (env and chroot exec it), not a subshell.
env -i "$chroot" --userspec=65532:65532 "$mnt" /usr/local/bin/jwks-operator \
  serve --dir /tmp/content --listen "127.0.0.1:$port" --log-format json 2>/dev/null &
server=$!
serve_check "http://127.0.0.1:$port" "$server"
kill "$server"
wait "$server" 2>/dev/null || true
server=""
# `jwks lint https://...` loads the system's CA certificates before it connects: the refused
# connection must be what fails, not the certificates.
lint=$(in_image jwks lint "https://127.0.0.1:$(free_port)/jwks.json" 2>&1) && fail "lint of a closed port succeeded"
[[ $lint != *"CA certificates"* ]] || fail "in the image: $lint"
"${buildah[@]}" rm "$container" >/dev/null
container=""
say "ok: from the image's rootfs as 65532: $version; serve answers; CA certificates load"

# 4. The pause image: configuration from the archive, then /pause on this host.
say "hack/image/build-pause.sh"
pause_archive=$("$root/hack/image/build-pause.sh")
pause_archive=${pause_archive##*$'\n'}
[[ -f $pause_archive ]] || fail "build-pause.sh printed '$pause_archive', not a file"
python3 - "$pause_archive" "$work/pause" <<'EOF' || fail "the pause image is not /pause as user 65535"
import io, json, sys, tarfile
archive = tarfile.open(sys.argv[1])
blob = lambda d: archive.extractfile("blobs/" + d.replace(":", "/")).read()
index = json.loads(archive.extractfile("index.json").read())
(entry,) = index["manifests"]
assert entry["annotations"]["org.opencontainers.image.ref.name"] == "localhost/kcp-pause:3.10", entry
manifest = json.loads(blob(entry["digest"]))
config = json.loads(blob(manifest["config"]["digest"]))["config"]
assert config.get("Entrypoint") == ["/pause"] and config.get("User") == "65535:65535", config
(layer,) = manifest["layers"]
files = tarfile.open(fileobj=io.BytesIO(blob(layer["digest"])))
members = [m for m in files.getmembers() if m.name.lstrip("./")]
assert [m.name.lstrip("./") for m in members] == ["pause"], files.getnames()
with open(sys.argv[2], "wb") as out:
    out.write(files.extractfile(members[0]).read())
EOF
chmod 0755 "$work/pause"
# As PID 1 of its own PID namespace, as in a pod: an orphan it inherits must be reaped.
unshare --pid --fork --kill-child "$work/pause" &
pause_ns=$!
for _ in $(seq 50); do
  pid1=$(ps -o pid= --ppid "$pause_ns" | tr -d ' ') && [[ -n $pid1 ]] && break
  sleep 0.1
done
[[ -n $pid1 ]] || fail "pause did not start"
sleep 0.3
kill -0 "$pid1" 2>/dev/null || fail "pause exited on its own"
nsenter --target "$pid1" --pid -- sh -c 'sleep 0.3 & exit 0' # sleep is orphaned to /pause
for _ in $(seq 30); do
  [[ -n $(ps -o pid= --ppid "$pid1") ]] || break
  sleep 0.1
done
[[ -z $(ps -o pid= --ppid "$pid1") ]] || fail "pause did not reap: $(ps -o pid,stat,cmd --ppid "$pid1")"
kill -TERM "$pid1"
status=0
wait "$pause_ns" || status=$?
pause_ns="" pid1=""
((status == 0)) || fail "pause exited $status on SIGTERM, not 0"
say "ok: pause image $pause_archive: /pause as 65535; reaps orphans as PID 1; exits 0 on SIGTERM"
