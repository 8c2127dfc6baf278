#!/usr/bin/env bash
# Checks the container image without a Docker engine: lints the Dockerfile with hadolint
# (installed from PyPI into a cache), builds the binary exactly as the Dockerfile's
# build stage does, and runs it the ways the image and the Deployments it creates run it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}/tools/hadolint-$(sha256sum "$root/hack/image/requirements.txt" | cut -c1-12)"
say() { printf '[image] %s\n' "$*" >&2; }

if [[ ! -x $cache/bin/hadolint ]]; then
  say "installing hadolint into $cache"
  rm -rf "$cache"
  python3 -m venv "$cache" >&2
  "$cache/bin/pip" install --quiet --no-deps --require-hashes -r "$root/hack/image/requirements.txt" >&2
fi
say "hadolint Dockerfile"
"$cache/bin/hadolint" "$root/Dockerfile"

# The Dockerfile's build stage: `cargo build --locked --profile dist --bin jwks-operator`.
say "cargo build --locked --profile dist --bin jwks-operator"
cargo build --locked --profile dist --bin jwks-operator --manifest-path "$root/Cargo.toml" >&2
bin="$root/target/dist/jwks-operator"

version=$("$bin" --version)
[[ $version == "jwks-operator $(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)" ]] \
  || { say "unexpected --version: $version"; exit 1; }
"$bin" run --help | grep -q -- '--server-image' || { say "run --help lacks --server-image"; exit 1; }

# `serve` as the server Deployment runs it: a read-only content directory, nothing written.
content=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; rm -rf "$content"' EXIT
printf '{"keys":[]}' >"$content/jwks.json"
printf '300' >"$content/cache-max-age"
chmod -R a-w "$content"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --dir "$content" --listen "127.0.0.1:$port" --log-format json 2>/dev/null &
server=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
body=$(curl -fsS "http://127.0.0.1:$port/.well-known/jwks.json")
[[ $body == '{"keys":[]}' ]] || { say "serve returned: $body"; exit 1; }
say "ok: $version; run --help; serve answers from a read-only directory"
