#!/usr/bin/env bash
# hack/image/rootfs.sh BINARY OUTDIR
#
# Assembles the operator image's root filesystem in OUTDIR (created; must not exist or be
# empty), the tree both the Dockerfile (`COPY --from=build /rootfs /`) and hack/image/build.sh
# put in a `FROM scratch` image:
#
#   /usr/local/bin/jwks-operator   BINARY
#   the shared libraries `ldd BINARY` names, the dynamic loader included: each file at its real
#     path, and each symlink on the way to it (/lib64 -> usr/lib64, ...) recreated as on this
#     machine, so every path ldd printed resolves in the image as it does here
#   /etc/passwd, /etc/group        root (0) and nonroot (65532), as in distroless
#   /etc/ssl/certs/ca-certificates.crt   for `jwks lint https://...` (rustls native roots)
#   /home/nonroot                  owned by 65532:65532, mode 0700
#   /tmp                           mode 1777
#
# Nothing else: no shell, no package manager. Everything else is owned by root, and every mtime is
# SOURCE_DATE_EPOCH (default 0), so the same inputs give the same tree. Needs root (or a user
# namespace, `buildah unshare`) for the ownership.
set -euo pipefail
say() { printf '[image] %s\n' "$*" >&2; }
die() { say "rootfs.sh: $*"; exit 1; }

(($# == 2)) || { echo "usage: $0 BINARY OUTDIR" >&2; exit 2; }
bin=$1
out=$2
epoch=${SOURCE_DATE_EPOCH:-0}
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $bin && -x $bin ]] || die "$bin is not an executable file"
[[ ! -e $out || -z $(ls -A "$out") ]] || die "$out exists and is not empty"
[[ -f $ca ]] || die "$ca is missing (install Debian's ca-certificates)"
umask 022

# `ldd` prints `name => /path (0x...)` for libraries, `/path (0x...)` for the loader and
# `linux-vdso.so.1 (0x...)` for the kernel's vDSO (no file). A static binary would need none of
# them, but the image has no libc of its own to fall back on: refuse it rather than guess.
if ! deps=$(LC_ALL=C ldd "$bin" 2>&1); then
  if [[ $deps == *"not a dynamic executable"* ]]; then
    die "$bin is not a dynamic executable (static, or not an ELF binary for this machine); this image expects the glibc binary \`cargo build --profile dist\` makes"
  fi
  die "ldd $bin failed: $deps"
fi
[[ $deps != *"statically linked"* ]] || die "$bin is statically linked; this image expects the glibc binary \`cargo build --profile dist\` makes"
[[ $deps != *"not found"* ]] || die "ldd $bin: missing libraries: $(grep 'not found' <<<"$deps" | tr -s ' \t' ' ')"
libs=()
while read -r first arrow path _; do
  if [[ $arrow == "=>" && $path == /* ]]; then
    libs+=("$path")
  elif [[ $first == /* ]]; then
    libs+=("$first") # the dynamic loader
  elif [[ $first == linux-vdso.so.* || $first == linux-gate.so.* ]]; then
    : # no file
  else
    die "unexpected ldd line for $bin: $first $arrow $path"
  fi
done <<<"$deps"
((${#libs[@]})) || die "ldd named no libraries for $bin"

# Copies the host path $1 to the same path under $out, one component at a time: a symlink is
# recreated as it is (same target) and followed; a regular file is copied with its mode.
copy_path() {
  local -a todo link
  local cur="" c target hops=0
  IFS=/ read -r -a todo <<<"${1#/}"
  while ((${#todo[@]})); do
    c=${todo[0]}
    todo=("${todo[@]:1}")
    case $c in
      "" | .) continue ;;
      ..) cur=${cur%/*}; continue ;; # $cur holds no symlinks, so this is the real parent
    esac
    if [[ -L $cur/$c ]]; then
      ((++hops <= 40)) || die "too many symlinks resolving $1"
      target=$(readlink "$cur/$c")
      if [[ ! -L $out$cur/$c ]]; then
        mkdir -p "$out$cur"
        ln -s "$target" "$out$cur/$c"
      fi
      [[ $target != /* ]] || cur=""
      IFS=/ read -r -a link <<<"${target#/}"
      todo=("${link[@]}" "${todo[@]}")
    elif ((${#todo[@]})); then
      cur=$cur/$c
    else
      [[ -f $cur/$c ]] || die "$1: $cur/$c is not a regular file"
      mkdir -p "$out$cur"
      cp --preserve=mode "$cur/$c" "$out$cur/$c"
    fi
  done
}

mkdir -p "$out"
for lib in "${libs[@]}"; do
  copy_path "$lib"
done
install -D -m 0755 "$bin" "$out/usr/local/bin/jwks-operator"
install -D -m 0644 "$ca" "$out$ca"
mkdir -p "$out/etc" "$out/home/nonroot" "$out/tmp"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$out/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$out/etc/group"
chmod 0644 "$out/etc/passwd" "$out/etc/group"
chmod 0755 "$out"
chown -R -h 0:0 "$out"
chown 65532:65532 "$out/home/nonroot"
chmod 0700 "$out/home/nonroot"
chmod 1777 "$out/tmp"
find "$out" -exec touch -h -d "@$epoch" {} +
say "rootfs.sh: $out: $(find "$out" -mindepth 1 | wc -l) entries, libraries: ${libs[*]}"
