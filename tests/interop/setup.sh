#!/usr/bin/env bash
# Installs the interop verifiers (PyJWT in a Python venv, panva jose in node_modules, and the
# go-oidc verifier built from go/) into a cache outside the repository and prints, one per
# line on stdout, where they are:
#
#   PYTHON=<venv python>        NODE_PATH=<node_modules dir>      INTEROP_DIR=<cache entry>
#   OIDC_VERIFY=<go-oidc verifier binary>
#
# Each value is the rest of its line. Progress goes to stderr.
#
# The cache entry is keyed by a hash of the pinned manifests (requirements.txt, package*.json,
# go/go.mod, go/go.sum), go/main.go, this script, the python3 version and `go version`, under
# ${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}/interop/.
# An entry counts as installed only once its stamp file exists, and the stamp is written last,
# so an interrupted install is wiped and redone on the next run. Concurrent runs serialise on
# a lock file. Needs python3, node, npm and go; reaches PyPI, npm and the Go module proxy
# (`go env GOPROXY`) only on a cold cache. Go modules go to the usual module cache (GOMODCACHE)
# and are checked against go/go.sum; the build uses GOTOOLCHAIN=local, so the installed Go must
# satisfy go/go.mod's go line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}/interop"

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in python3 node npm go sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool is required but not on PATH"
done

key="$({
  cat "$here/requirements.txt" "$here/package.json" "$here/package-lock.json" "$here/setup.sh"
  cat "$here/go/go.mod" "$here/go/go.sum" "$here/go/main.go"
  python3 -c 'import sys; print(sys.version)'
  GOTOOLCHAIN=local go version
} | sha256sum | cut -c1-16)"
entry="$cache_root/$key"
stamp="$entry/.installed"

report() {
  printf 'PYTHON=%s\n' "$entry/venv/bin/python"
  printf 'NODE_PATH=%s\n' "$entry/node/node_modules"
  printf 'INTEROP_DIR=%s\n' "$entry"
  printf 'OIDC_VERIFY=%s\n' "$entry/bin/oidc-verify"
}

if [[ -f "$stamp" ]]; then
  report
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
# Another run may have finished the install while this one waited for the lock.
if [[ -f "$stamp" ]]; then
  report
  exit 0
fi

started=$SECONDS
log "installing interop verifiers into $entry"
trap 'log "install into $entry failed; no stamp was written, so the next run starts over"' ERR
rm -rf "$entry"
mkdir -p "$entry/node" "$entry/go" "$entry/bin"

python3 -m venv "$entry/venv" >&2
# --no-deps + --require-hashes: requirements.txt lists the whole closure with hashes.
env -u PIP_FIND_LINKS "$entry/venv/bin/python" -m pip install \
  --quiet --no-input --disable-pip-version-check \
  --no-deps --require-hashes --only-binary=:all: \
  -r "$here/requirements.txt" >&2

cp "$here/package.json" "$here/package-lock.json" "$entry/node/"
(cd "$entry/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2

"$entry/venv/bin/python" -c 'import jwt, cryptography' \
  || die "PyJWT or cryptography does not import from $entry/venv"
NODE_PATH="$entry/node/node_modules" node -e 'require.resolve("jose")' \
  || die "jose does not resolve from $entry/node/node_modules"

# Built from a copy, so no go.work or VCS state around the repository can leak into the build.
cp "$here/go/go.mod" "$here/go/go.sum" "$here/go/main.go" "$entry/go/"
(
  cd "$entry/go"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath GOWORK=off
  log "downloading Go modules through GOPROXY=$(go env GOPROXY)"
  go mod download
  go mod verify >&2
  go build -mod=readonly -buildvcs=false -o "$entry/bin/oidc-verify" .
) >&2
# With no arguments it must exit 2 (usage): proof that the binary runs here.
rc=0; "$entry/bin/oidc-verify" >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || die "$entry/bin/oidc-verify does not run (exit $rc without arguments, expected 2)"

printf 'installed %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
log "installed in $((SECONDS - started))s"
report
