#!/usr/bin/env bash
# Checks the tools the build and tests need and installs the missing ones from Debian's
# packages when running as root (CI and fresh machines). Prints what it does; never guesses.
set -euo pipefail
say() { printf '[tools] %s\n' "$*" >&2; }

missing_debs=()
need() { # command debian-package
  command -v "$1" >/dev/null 2>&1 || missing_debs+=("$2")
}
need openssl openssl
need curl curl
need python3 python3
need node nodejs
need npm npm
need setpriv util-linux
need faketime faketime # a test runs the operator with its clock an hour ahead
# The node (hack/control-plane/node.sh) and the images built without a registry (hack/image/).
need containerd containerd
need runc runc
need buildah buildah
need iptables iptables
need conntrack conntrack
[[ -x /usr/lib/cni/bridge ]] || missing_debs+=(containernetworking-plugins)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing_debs+=(python3-venv)

if ((${#missing_debs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing from Debian: ${missing_debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    say "missing: ${missing_debs[*]} (install them, or run as root to let this script do it)"
    exit 1
  fi
fi

command -v cargo >/dev/null || { say "cargo is missing: install Rust >= 1.89 (https://rustup.rs)"; exit 1; }
command -v go >/dev/null || { say "go is missing: Go >= 1.26 builds the test control plane, helm and kubeconform"; exit 1; }
rustfmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
say "ok: $(cargo --version | cut -d' ' -f1-2), $(go version | cut -d' ' -f3), $(openssl version | cut -d' ' -f1-2), node $(node --version)"
