#!/usr/bin/env bash
# Tests the verifier scripts themselves, without the jwks-operator CLI: keys from
# `openssl genpkey`, JWKs from make_test_jwk.py. Every signing alg must pass both verifiers,
# and three broken inputs must each make a verifier exit non-zero: a kid that is not the
# thumbprint, a JWK whose alg differs from the token's, and a "different" key that is the
# same key. Prints one line per case and "N passed, N failed" last.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
while IFS='=' read -r name value; do
  case "$name" in
    PYTHON) PYTHON="$value" ;;
    NODE_PATH) export NODE_PATH="$value" ;;
  esac
done < <("$here/setup.sh")

work="$(mktemp -d "${TMPDIR:-/tmp}/jwks-interop-selftest.XXXXXX")"
trap 'rm -rf "$work"' EXIT

genkey() { # ALG DIR
  local dir="$2"
  mkdir -p "$dir"
  case "$1" in
    RS*|PS*) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null ;;
    ES256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" ;;
    ES384) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$dir/key.pem" ;;
    ES512) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$dir/key.pem" ;;
    EdDSA) openssl genpkey -algorithm ED25519 -out "$dir/key.pem" ;;
  esac
  "$PYTHON" "$here/make_test_jwk.py" --alg "$1" "$dir/key.pem" >"$dir/jwk.json"
}

verify() { # ALG DIR OTHER: both verifiers, output to DIR/*.json and DIR/*.err
  node "$here/jose_verify.mjs" --alg "$1" --key-dir "$2" --other-key-dir "$3" >"$2/jose.json" 2>"$2/jose.err" \
    && "$PYTHON" "$here/pyjwt_verify.py" --alg "$1" --key-dir "$2" --other-key-dir "$3" >"$2/pyjwt.json" 2>"$2/pyjwt.err"
}

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; }

for alg in RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA; do
  genkey "$alg" "$work/$alg/a"
  genkey "$alg" "$work/$alg/b"
  if verify "$alg" "$work/$alg/a" "$work/$alg/b"; then
    pass "$alg verifies in jose and PyJWT, fails with the other key, thumbprint = kid"
  else
    fail "$alg: $(cat "$work/$alg/a/jose.err" "$work/$alg/a/pyjwt.err" 2>/dev/null | tr '\n' ' ')"
  fi
done

expect_rejected() { # NAME ALG DIR OTHER
  if verify "$2" "$3" "$4"; then
    fail "$1 was not detected"
  else
    pass "$1 is detected: $(cat "$3/jose.err" "$3/pyjwt.err" 2>/dev/null | head -1)"
  fi
}

cp -r "$work/ES256/a" "$work/wrong-kid"
"$PYTHON" -c 'import json,sys; p=sys.argv[1]; j=json.load(open(p)); j["kid"]="not-the-thumbprint"; json.dump(j,open(p,"w"))' "$work/wrong-kid/jwk.json"
expect_rejected "a kid that is not the RFC 7638 thumbprint" ES256 "$work/wrong-kid" "$work/ES256/b"

cp -r "$work/RS256/a" "$work/alg-mismatch"
expect_rejected "an RS256 JWK used for a PS256 token" PS256 "$work/alg-mismatch" "$work/PS256/b"

expect_rejected "a negative control that is the same key" EdDSA "$work/EdDSA/a" "$work/EdDSA/a"

printf '%d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
